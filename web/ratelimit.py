"""Failed-login throttling per (username, client address), in memory per process.

Checked before the password is hashed, so an attacker cannot make us burn CPU either.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


class LoginThrottle:
    def __init__(
        self,
        *,
        failures_allowed: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._allowed = failures_allowed
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def retry_after_s(self, username: str, address: str) -> int:
        """0 when an attempt may go ahead, else whole seconds until one may."""
        recent = self._recent((username, address))
        if len(recent) < self._allowed:
            return 0
        return max(1, math.ceil(recent[0] + self._window_s - self._clock()))

    def failed(self, username: str, address: str) -> None:
        if len(self._failures) >= self._max_keys:
            self._forget_expired()
        self._recent((username, address)).append(self._clock())

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username, address), None)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        horizon = self._clock() - self._window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        return recent

    def _forget_expired(self) -> None:
        horizon = self._clock() - self._window_s
        stale = [key for key, times in self._failures.items() if not times or times[-1] <= horizon]
        for key in stale:
            del self._failures[key]
        if len(self._failures) >= self._max_keys:  # a flood of distinct keys: start over
            self._failures.clear()
