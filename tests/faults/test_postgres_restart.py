"""Drill 5: PostgreSQL stopped with `-m immediate` (a crash, as far as sessions can tell) and
started again, under load.

A private `Cluster` (not the suite's shared one), one database, two `tickets serve`
processes and 50 agents. Each repetition crashes and restarts the server; the service must
answer fetches with 200 again within a bounded time, under a new epoch, and every
acknowledged assignment and sale must still be in the database (checked after every
repetition with the shared invariants).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest

from storage.migrate import migrate
from tests.faults.drills import agents, leadership, repetitions, restock, summary, wait_epoch_after
from tests.faults.load import Load
from tests.support.factories import Factory
from tests.support.invariants import check_invariants
from tests.support.postgres import Cluster
from tests.support.servers import Servers

RECOVERY_BOUND_S = 20.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    private = Cluster(max_connections=100)
    private.start()
    try:
        yield private
    finally:
        private.destroy()


@pytest.mark.slow
async def test_the_service_recovers_from_a_postgres_crash_and_loses_nothing_acknowledged(
    cluster, tmp_path, session, ledger, report
):
    admin = await asyncpg.connect(cluster.dsn())
    await admin.execute("CREATE DATABASE drill")
    await admin.close()
    dsn = cluster.dsn("drill")
    await migrate(dsn)
    db = await asyncpg.connect(dsn)
    make = Factory(db)
    probe = await make.agent(capacity=0, username="probe")
    crowd = await agents(make)
    await restock(db, make)

    farm = Servers(dsn, tmp_path / "servers")
    outages, recoveries = [], []
    try:
        (first,) = await farm.start(session, probe.headers, want="leader")
        (second,) = await farm.start(session, probe.headers, want="standby")
        live = [first, second]
        async with Load(session, crowd, lambda: live, ledger) as load:
            for _ in range(repetitions(2)):
                await restock(db, make)
                before = await leadership(db)
                await load.progress(100)
                await db.close()

                crashed = time.monotonic()
                await asyncio.to_thread(cluster.stop, "immediate")
                await asyncio.to_thread(cluster.start)
                restarted = time.monotonic()

                db = make.db = await asyncpg.connect(dsn)
                after = await wait_epoch_after(db, before["epoch"], timeout_s=RECOVERY_BOUND_S)
                leader = next(s for s in live if s.owns(after["holder"]))
                await load.progress(50, server=leader.name, timeout_s=RECOVERY_BOUND_S)
                served = min(
                    r.received
                    for r in load.answers(status=200, server=leader.name, since=restarted)
                )
                outages.append(served - crashed)
                recoveries.append(served - restarted)
                assert served - restarted <= RECOVERY_BOUND_S
                await check_invariants(db, ledger)
            await load.progress(50)
        counts = await check_invariants(db, ledger)
    finally:
        farm.close()
        await db.close()
    report(f"crash → first 200 again: {summary(outages)}")
    report(f"postgres back up → first 200: {summary(recoveries)}; {counts}")
