"""Drill 1: the leader is killed with SIGKILL under load while a standby runs.

Two `tickets serve` processes share one database; 50 agents fetch and sell through both,
retrying on 503. Each repetition kills the current leader and measures, from the clients'
side, the time from SIGKILL until the standby answers a fetch with 200; then a new standby
is started, so the next repetition kills the process that took over.

Goal: p99 ≤ 3 s over the repetitions (`make chaos` reports it over 20); each repetition
must stay under a generous bound.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.drills import agents, leadership, repetitions, restock, summary
from tests.faults.load import Load
from tests.support.invariants import check_invariants, lock_holders
from tests.support.servers import first_status, percentile

BOUND_S = 10.0
GOAL_P99_S = 3.0


@pytest.mark.slow
async def test_standby_takes_over_within_seconds_when_the_leader_is_killed(
    servers, session, make, db, ledger, probe, report
):
    await restock(db, make)
    crowd = await agents(make)
    (leader,) = await servers.start(session, probe.headers, want="leader")
    (standby,) = await servers.start(session, probe.headers, want="standby")
    live = [leader, standby]
    takeovers: list[float] = []

    async with Load(session, crowd, lambda: live, ledger) as load:
        for _ in range(repetitions(3)):
            await restock(db, make)
            await load.progress(100, server=leader.name)
            before = await leadership(db)
            assert leader.owns(before["holder"]), (before, leader)

            prober = asyncio.create_task(
                first_status(session, standby, probe.headers, timeout_s=BOUND_S + 5)
            )
            killed = time.monotonic()
            leader.kill()
            probed = await prober
            seen = [r.received for r in load.answers(status=200, server=standby.name, since=killed)]
            took = min([probed, *seen]) - killed
            takeovers.append(took)
            assert took <= BOUND_S, f"takeover took {took:.2f} s"

            await leader.wait_exit()
            after = await leadership(db)
            assert standby.owns(after["holder"]) and after["epoch"] == before["epoch"] + 1
            assert await lock_holders(db) == [after["holder_pid"]]

            live.remove(leader)
            (new,) = await servers.start(session, probe.headers, want="standby")
            live.append(new)
            leader, standby = standby, new
        await load.progress(50, server=leader.name)

    counts = await check_invariants(db, ledger)
    report(f"SIGKILL → standby 200: {summary(takeovers)} (goal p99 ≤ {GOAL_P99_S} s)")
    report(f"takeovers: {', '.join(f'{t:.3f}' for t in takeovers)}; {counts}")
    if len(takeovers) >= 20:
        assert percentile(takeovers, 99) <= GOAL_P99_S, summary(takeovers)
