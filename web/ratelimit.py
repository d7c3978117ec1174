"""Failed-login throttling, in memory per process.

Two limits: failures per (username, client address), which stops guessing one password, and
failures per address over every username, which stops one address trying a common password
on many accounts. There is deliberately no limit per username alone: anyone could then lock
any user out.

An attempt in flight counts against a limit as a failure would, until its password has been
checked: a burst of concurrent guesses would otherwise all pass the check before the first
one had failed, each burning an argon2 hash. Attempts beyond what is left wait for those in
flight instead of being refused, so a crowd of right passwords (an office logging in at
nine) all get in, only later.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Literal

Outcome = Literal["succeeded", "failed", "unchecked"]


class _Limit:
    """At most `allowed` failures and attempts in flight per key within `window_s`."""

    def __init__(
        self, *, allowed: int, window_s: float, clock: Callable[[], float], max_keys: int
    ) -> None:
        self._allowed = allowed
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[Hashable, deque[float]] = {}
        self._in_flight: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}
        # Keys whose failures have all expired are dropped when next read, and all of them
        # once per window: memory holds only the failures of the last window.
        self._next_sweep = clock() + window_s

    def retry_after_s(self, key: Hashable) -> int:
        """Whole seconds until the key's failures leave room; 0 when they already do."""
        recent = self._recent(key)
        if len(recent) < self._allowed:
            return 0
        return max(1, math.ceil(recent[0] + self._window_s - self._clock()))

    def has_room(self, key: Hashable) -> bool:
        return len(self._recent(key)) + self._in_flight.get(key, 0) < self._allowed

    def start(self, key: Hashable) -> None:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def finish(self, key: Hashable, *, failed: bool) -> None:
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
        else:
            del self._in_flight[key]
        if failed:
            self._add_failure(key)
        # A failure frees no room, but whoever waits must learn that the limit is reached.
        self.wake_next(key)

    def forget_failures(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    async def room_or_news(self, key: Hashable) -> None:
        """Until an attempt of this key finishes, or a woken waiter passes its turn on."""
        turn = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(key, deque())
        queue.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.wake_next(key)  # woken, but leaving (timed out): the turn goes on
            raise
        finally:
            if turn in queue:  # not woken: cancelled, or timed out
                queue.remove(turn)
            # Only this queue: once it was dropped, a later waiter may have begun another.
            if not queue and self._waiting.get(key) is queue:
                del self._waiting[key]

    def wake_next(self, key: Hashable) -> None:
        queue = self._waiting.get(key)
        while queue:
            turn = queue.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def tracked_keys(self) -> int:
        return len(self._failures) + len(self._in_flight)

    def _add_failure(self, key: Hashable) -> None:
        now = self._clock()
        if now >= self._next_sweep or len(self._failures) >= self._max_keys:
            self._forget_expired()
            self._next_sweep = now + self._window_s
        recent = self._recent(key)
        if not recent:
            self._failures[key] = recent
        recent.append(now)

    def _recent(self, key: Hashable) -> deque[float]:
        # Reading never stores a key: an attempt refused before it ran leaves nothing behind.
        recent = self._failures.get(key)
        if recent is None:
            return deque()
        horizon = self._clock() - self._window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failures[key]
        return recent

    def _forget_expired(self) -> None:
        horizon = self._clock() - self._window_s
        stale = [key for key, times in self._failures.items() if not times or times[-1] <= horizon]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= self._max_keys:  # a flood of distinct keys: start over
            self._failures.clear()


class LoginThrottle:
    def __init__(
        self,
        *,
        failures_allowed: int,
        failures_allowed_per_address: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
        max_wait_s: float = 10.0,
    ) -> None:
        self._pairs = _Limit(
            allowed=failures_allowed, window_s=window_s, clock=clock, max_keys=max_keys
        )
        self._addresses = _Limit(
            allowed=failures_allowed_per_address,
            window_s=window_s,
            clock=clock,
            max_keys=max_keys,
        )
        self._max_wait_s = max_wait_s

    async def admit(self, username: str, address: str) -> int:
        """0 once the attempt may go ahead (it is then in flight until `finished`); else whole
        seconds until one may, and nothing is counted."""
        pair = (username, address)
        # The limit and key whose waiters' turn this attempt was woken with. Whoever is woken
        # and does not use the turn (it is refused, or waits on its other limit) passes it
        # on, or the rest would wait for an attempt that will never finish.
        turn: tuple[_Limit, Hashable] | None = None
        try:
            async with asyncio.timeout(self._max_wait_s):
                while True:
                    wait_s = max(
                        self._pairs.retry_after_s(pair), self._addresses.retry_after_s(address)
                    )
                    if wait_s:
                        return wait_s
                    if not self._pairs.has_room(pair):
                        blocked: tuple[_Limit, Hashable] = (self._pairs, pair)
                    elif not self._addresses.has_room(address):
                        blocked = (self._addresses, address)
                    else:
                        turn = None
                        self._pairs.start(pair)
                        self._addresses.start(address)
                        return 0
                    if turn is not None and turn != blocked:
                        turn[0].wake_next(turn[1])
                    turn = None
                    await blocked[0].room_or_news(blocked[1])
                    turn = blocked
        except TimeoutError:
            return 1  # still crowded by attempts in flight, which end within seconds
        finally:
            if turn is not None:
                turn[0].wake_next(turn[1])

    def finished(self, username: str, address: str, outcome: Outcome) -> None:
        """The attempt's password matched ("succeeded"), did not, or its user is unknown or
        inactive ("failed"), or it was never checked because the check itself broke
        ("unchecked": the database failed), which is held against no one."""
        pair = (username, address)
        failed = outcome == "failed"
        if outcome == "succeeded":
            self._pairs.forget_failures(pair)  # the pair starts afresh; the address does not
        self._pairs.finish(pair, failed=failed)
        self._addresses.finish(address, failed=failed)

    def tracked_keys(self) -> int:
        """Keys remembered for failures or attempts in flight (memory grows with these)."""
        return self._pairs.tracked_keys() + self._addresses.tracked_keys()
