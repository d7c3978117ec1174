"""Drill 3: the leader is frozen (SIGSTOP), its session terminated, the standby takes over,
then the frozen process is resumed (SIGCONT).

Whatever the frozen process had in flight — decided batches, replies not yet sent — must not
reach the database once it wakes: no ticket_events row under its old epoch once its session
is gone (its commits all need that session; a statement it sent just before the signal took
effect may still commit before the terminate, as the leader it still was), and none after
the new leader's first write; and every 200 it still sends after
waking is for something committed before the freeze (checked by the invariants: each
acknowledged assignment and sale is in the database). Once awake it must say it is a standby.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.drills import agents, leadership, repetitions, restock, summary, wait_epoch_after
from tests.faults.load import Load
from tests.support.invariants import check_invariants, lock_holders
from tests.support.servers import first_status


@pytest.mark.slow
async def test_a_frozen_leader_commits_nothing_after_it_wakes(
    servers, session, make, db, ledger, probe, report
):
    await restock(db, make)
    crowd = await agents(make)
    (first,) = await servers.start(session, probe.headers, want="leader")
    (second,) = await servers.start(session, probe.headers, want="standby")
    live = [first, second]
    takeovers, settles, late_acks = [], [], []

    # Short client timeouts: requests to the frozen process hang until they give up.
    async with Load(session, crowd, lambda: live, ledger, timeout_s=1.0) as load:
        for _ in range(repetitions(2)):
            await restock(db, make)
            before = await leadership(db)
            old = next(s for s in live if s.owns(before["holder"]))
            standby = next(s for s in live if s is not old)
            await load.progress(100, server=old.name)

            old.freeze()
            prober = asyncio.create_task(
                first_status(session, standby, probe.headers, timeout_s=10)
            )
            terminated = time.monotonic()
            # Waits (up to 5 s) until the backend is gone: from then on nothing can commit
            # under its session.
            assert await db.fetchval("SELECT pg_terminate_backend($1, 5000)", before["holder_pid"])
            session_gone_at = await db.fetchval("SELECT clock_timestamp()")
            takeovers.append(await prober - terminated)
            after = await wait_epoch_after(db, before["epoch"], timeout_s=10)
            assert standby.owns(after["holder"]), after
            await load.progress(50, server=standby.name)

            thawed = time.monotonic()
            old.thaw()
            await old.wait_ready(session, probe.headers, want="standby", timeout_s=10)
            settles.append(time.monotonic() - thawed)
            late_acks.append(load.count(server=old.name, since=thawed))

            written = await db.fetchval(
                "SELECT count(*) FROM ticket_events WHERE epoch = $1"
                " AND (at >= $2 OR id > (SELECT min(id) FROM ticket_events WHERE epoch > $1))",
                before["epoch"],
                session_gone_at,
            )
            assert written == 0, (
                f"{written} events under epoch {before['epoch']} after its session was gone"
            )
            assert (await leadership(db))["epoch"] == after["epoch"], "leadership moved again"
            assert await lock_holders(db) == [after["holder_pid"]]
        await load.progress(50)

    counts = await check_invariants(db, ledger)
    report(f"freeze+terminate → standby 200: {summary(takeovers)}")
    report(f"SIGCONT → old leader says standby: {summary(settles)}")
    report(f"200s the woken process sent after SIGCONT (committed before the freeze): {late_acks}")
    report(f"{counts}")
