"""Drill 6: three servers started at the same moment on one database: exactly one leads.

Each repetition spawns three `tickets serve` processes back to back, waits until every one
is ready and one of them answers 200, then asks all three: exactly one answers fetch with
200, the other two 503 'standby'; pg_locks shows one granted holder (the backend
dispatcher_leadership names, claimed by that same process) and two waiters; and exactly one
epoch was claimed. Then all three are killed for the next repetition.

Also here: how fast a standby stops on SIGTERM (it is waiting inside pg_advisory_lock).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.drills import leadership, repetitions, summary, until
from tests.support.invariants import Ledger, check_invariants, lock_holders, lock_waiters
from tests.support.servers import Server

STANDBY_STOP_BOUND_S = 3.0


async def one_leader(session, servers: list[Server], headers) -> Server:
    """Wait (bounded) until one server answers 200; return it."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(s.fetch(session, headers) for s in servers))
        leading = [s for s, a in zip(servers, answers, strict=True) if a.status == 200]
        if leading:
            return leading[0]
        await asyncio.sleep(0.02)
    raise TimeoutError("no server leads")


@pytest.mark.slow
async def test_three_servers_started_together_elect_exactly_one_leader(
    servers, session, make, db, probe, report
):
    ids = await make.tickets(100)
    agent = await make.agent(capacity=2)
    ledger = Ledger()
    elections = []
    for rep in range(repetitions(2)):
        epoch = (await leadership(db))["epoch"]
        started = time.monotonic()
        trio = servers.spawn(3)
        await asyncio.gather(*(s.wait_ready(session, probe.headers) for s in trio))
        leader = await one_leader(session, trio, probe.headers)
        elections.append(time.monotonic() - started)

        for _ in range(3):  # ask several times: the answer must be stable
            answers = await asyncio.gather(*(s.fetch(session, agent.headers) for s in trio))
            ok = [s for s, a in zip(trio, answers, strict=True) if a.status == 200]
            standby = [s for s, a in zip(trio, answers, strict=True) if a.is_standby]
            assert ok == [leader], f"repetition {rep}: 200 from {ok}: {answers}"
            assert len(standby) == 2, f"repetition {rep}: {answers}"
            ledger.fetched(agent.agent_id, answers[trio.index(leader)].body["tickets"])

        claimed = await leadership(db)
        assert claimed["epoch"] == epoch + 1, f"{claimed['epoch'] - epoch} leaders claimed"
        assert leader.owns(claimed["holder"]), (claimed, trio)
        assert await lock_holders(db) == [claimed["holder_pid"]]

        # A standby answers 503 from the moment it starts waiting for leadership, a moment
        # before its lock request reaches PostgreSQL: wait (bounded) for both to queue.
        async def both_standbys_queued() -> bool:
            return len(await lock_waiters(db)) == 2

        await until(both_standbys_queued, timeout_s=10, what="two standbys waiting for the lock")

        for server in trio:
            server.kill()
        await asyncio.gather(*(s.wait_exit() for s in trio))

    assert sorted(ledger.assigned[agent.agent_id]) == ids[:2]
    counts = await check_invariants(db, ledger)
    report(f"three at once → one leader answering 200: {summary(elections)}; {counts}")


@pytest.mark.slow
async def test_a_standby_stops_promptly_on_sigterm(servers, session, probe, db, report):
    (leader,) = await servers.start(session, probe.headers, want="leader")
    (standby,) = await servers.start(session, probe.headers, want="standby")
    asked = time.monotonic()
    standby.terminate()
    await standby.wait_exit(timeout_s=30)
    took = time.monotonic() - asked
    report(f"standby SIGTERM → exit: {took:.2f} s (bound {STANDBY_STOP_BOUND_S} s)")
    assert (await leadership(db))["holder"] and leader.owns((await leadership(db))["holder"])
    assert took <= STANDBY_STOP_BOUND_S, (
        f"a standby took {took:.1f} s to stop: Dispatcher.stop() waits for a task that is"
        " blocked in pg_advisory_lock"
    )
