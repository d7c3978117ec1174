"""Arrangements and helpers shared by the drills."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from dispatcher.core import AgentState, Snapshot
from tests.support.factories import Actor, Factory


def repetitions(light: int) -> int:
    """How many times a drill repeats: `light` in the suite, CHAOS_REPEAT when set."""
    return int(os.environ.get("CHAOS_REPEAT") or light)


AGENTS = 50
CAPACITY = 3
# Unassigned tickets kept waiting before each repetition, so agents are never idle.
STOCK = 3_000


async def agents(make: Factory, count: int = AGENTS, capacity: int = CAPACITY) -> list[Actor]:
    return [await make.agent(capacity=capacity) for _ in range(count)]


async def restock(db: asyncpg.Connection, make: Factory, minimum: int = STOCK) -> None:
    waiting = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'unassigned'")
    if waiting < minimum:
        await make.tickets(2 * minimum - waiting)


async def leadership(db: asyncpg.Connection) -> dict[str, Any]:
    row = await db.fetchrow("SELECT epoch, holder, holder_pid FROM dispatcher_leadership")
    assert row is not None
    return dict(row)


async def wait_epoch_after(db: asyncpg.Connection, epoch: int, *, timeout_s: float) -> dict:
    """Poll dispatcher_leadership until a leader with a later epoch claimed it."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = await leadership(db)
        if row["epoch"] > epoch:
            return row
        if time.monotonic() > deadline:
            raise TimeoutError(f"no new leader after epoch {epoch} within {timeout_s} s: {row}")
        await asyncio.sleep(0.01)


async def database_snapshot(db: asyncpg.Connection) -> Snapshot:
    agents = {
        r["id"]: AgentState(r["capacity"], r["is_active"])
        for r in await db.fetch("SELECT id, capacity, is_active FROM agents")
    }
    held: dict[int, list[int]] = defaultdict(list)
    for r in await db.fetch("SELECT id, agent_id FROM tickets WHERE status = 'assigned'"):
        held[r["agent_id"]].append(r["id"])
    unassigned = [
        r["id"]
        for r in await db.fetch("SELECT id FROM tickets WHERE status = 'unassigned' ORDER BY id")
    ]
    return Snapshot(agents, held, unassigned, None)


async def until(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout_s: float, what: str
) -> None:
    """Poll `condition` (sync or async) until true; TimeoutError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.002)


def summary(values: list[float]) -> str:
    from tests.support.servers import percentile

    if not values:
        return "n=0"
    return (
        f"n={len(values)} min={min(values):.3f}s p50={percentile(values, 50):.3f}s"
        f" p99={percentile(values, 99):.3f}s max={max(values):.3f}s"
    )
