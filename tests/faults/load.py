"""Agents under load for the drills: each loops fetch → sell-everything, retrying on 503.

Every answer is kept (`Record`: which server, status, when) so a drill can measure from the
clients' side (first 200 after a kill, last 200 of a process after its session died), and
every 200 goes into the shared `Ledger` the invariant checks read.

Agents rotate to the next server on anything but 200 (a client behind a load balancer would
see the same), after a short pause: retries are deliberately faster than Retry-After so
failover is measured, not the client's patience. Requests time out after `timeout_s`, which
matters when a server is frozen.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from tests.support.factories import Actor
from tests.support.invariants import Ledger
from tests.support.servers import FETCH, SELL, Server


@dataclass(frozen=True, slots=True)
class Record:
    agent_id: int
    kind: str  # "fetch" | "sell"
    server: str
    status: int  # 0: no HTTP answer
    sent: float  # time.monotonic()
    received: float  # time.monotonic()
    wall: float  # time.time() at arrival, to compare with log timestamps


class Load:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        agents: Sequence[Actor],
        targets: Callable[[], Sequence[Server]],
        ledger: Ledger,
        *,
        timeout_s: float = 2.0,
        pause_s: float = 0.03,
        seed: int = 0,
    ) -> None:
        self.session = session
        self.agents = list(agents)
        self.targets = targets
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self.records: list[Record] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._random = random.Random(seed)

    # ------------------------------------------------------------ control

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._agent(i, a), name=f"agent-{a.agent_id}")
            for i, a in enumerate(self.agents)
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let every agent finish the request in flight (bounded), then cancel stragglers."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def __aenter__(self) -> Load:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ observing

    def count(self, *, status: int = 200, server: str | None = None, since: float = 0.0) -> int:
        return sum(
            1
            for r in self.records
            if r.status == status and r.received >= since and (server is None or r.server == server)
        )

    def answers(
        self, *, status: int | None = None, server: str | None = None, since: float = 0.0
    ) -> list[Record]:
        return [
            r
            for r in self.records
            if (status is None or r.status == status)
            and r.received >= since
            and (server is None or r.server == server)
        ]

    async def progress(
        self, count: int, *, server: str | None = None, timeout_s: float = 10.0
    ) -> None:
        """Wait until `count` more 200s arrived (from `server`, if given)."""
        since = time.monotonic()
        deadline = since + timeout_s
        while self.count(server=server, since=since) < count:
            if time.monotonic() > deadline:
                recent = self.answers(since=since)
                raise TimeoutError(
                    f"no progress: {self.count(server=server, since=since)} of {count} 200s"
                    f" from {server or 'any server'} in {timeout_s} s;"
                    f" statuses seen {sorted({r.status for r in recent})}"
                )
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------ the agents

    async def _agent(self, index: int, actor: Actor) -> None:
        assert actor.agent_id is not None
        turn = index
        while not self._stop.is_set():
            status, body = await self._post(turn, "fetch", actor, FETCH, None)
            if status != 200:
                turn += 1
                await self._pause()
                continue
            ids = self.ledger.fetched(actor.agent_id, body["tickets"])
            if not ids:
                await self._pause()
                continue
            while not self._stop.is_set():
                status, body = await self._post(turn, "sell", actor, SELL, {"ticket_ids": ids})
                if status == 200:
                    if body.get("sold") != sorted(ids):
                        self.ledger.anomaly(f"agent {actor.agent_id}: sold {ids} → {body}")
                    self.ledger.sale_acknowledged(actor.agent_id, ids)
                    break
                if status not in (0, 503):
                    # Only acknowledged tickets are sold: anything but "retry later" is a bug.
                    self.ledger.anomaly(f"agent {actor.agent_id}: sell {ids} → {status} {body}")
                    break
                turn += 1
                await self._pause()

    async def _post(
        self, turn: int, kind: str, actor: Actor, path: str, payload: object
    ) -> tuple[int, dict]:
        servers = self.targets()
        if not servers:
            await self._pause()
            return 0, {}
        server = servers[turn % len(servers)]
        sent = time.monotonic()
        answer = await server.post(
            self.session, path, actor.headers, payload, timeout_s=self.timeout_s
        )
        assert actor.agent_id is not None
        self.records.append(
            Record(
                actor.agent_id,
                kind,
                server.name,
                answer.status,
                sent,
                time.monotonic(),
                time.time(),
            )
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        return answer.status, body

    async def _pause(self) -> None:
        await asyncio.sleep(self.pause_s * (0.5 + self._random.random()))
