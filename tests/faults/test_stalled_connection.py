"""Drill 8: the leader's connection stalls (a partition: nothing flows, nothing closes).

In-process: a Dispatcher talks to PostgreSQL through a `Proxy`, with a short heartbeat and
write timeout. Repetitions alternate two cases:

* busy: the proxy stalls and fetches arrive at once, so their batch hangs on the wire. The
  batch's step times out after write_timeout_s, which by design (dispatcher/actor.py: "a
  write that takes too long ends leadership at once") ends leadership: every waiter gets 503
  and the dispatcher stops leading within write_timeout_s (plus slack);
* idle: the proxy stalls with nothing to decide; the next heartbeat does not answer, so
  leadership ends within heartbeat_interval_s + write_timeout_s (plus slack).

Either way fetches sent after it gave up are refused at once, and when the partition heals it
leads again under a new epoch, with memory equal to the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from dispatcher.actor import Dispatcher, DispatcherOptions
from dispatcher.errors import Unavailable
from tests.faults.drills import database_snapshot, repetitions, restock, summary, until
from tests.support.invariants import Ledger, check_invariants, lock_holders
from tests.support.proxy import Proxy

OPTIONS = DispatcherOptions(heartbeat_interval_s=0.2, write_timeout_s=1.0, rescan_interval_s=3600)
SLACK_S = 0.5  # event-loop scheduling on a busy machine
# Busy: one timed-out step. Idle: up to a heartbeat interval, then a timed-out heartbeat.
BUSY_GIVE_UP_S = OPTIONS.write_timeout_s + SLACK_S
IDLE_GIVE_UP_S = OPTIONS.heartbeat_interval_s + OPTIONS.write_timeout_s + SLACK_S


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[Proxy]:
    async with Proxy.to(database_url) as running:
        yield running


@pytest.fixture
async def dispatcher(database_url: str, proxy: Proxy) -> AsyncIterator[Dispatcher]:
    running = Dispatcher(proxy.dsn(database_url), identity="drill-8", options=OPTIONS)
    await running.start()
    try:
        yield running
    finally:
        proxy.resume()
        await running.stop()


@pytest.mark.slow
async def test_a_stalled_leader_connection_gives_leadership_up_and_waiters_get_503(
    dispatcher: Dispatcher, proxy: Proxy, db, make, report
):
    await asyncio.wait_for(dispatcher.leading.wait(), 10)
    ledger = Ledger()
    crowd = [await make.agent(capacity=2) for _ in range(8)]
    give_ups: dict[str, list[float]] = {"busy": [], "idle": []}
    answers: dict[str, list[float]] = {"busy": [], "idle": []}
    recoveries: list[float] = []

    async def round_trip(actor) -> None:
        held = ledger.fetched(actor.agent_id, await dispatcher.fetch(actor.agent_id))
        if held:
            assert await dispatcher.sell(actor.agent_id, held) == held
            ledger.sale_acknowledged(actor.agent_id, held)

    for rep in range(2 * repetitions(1)):
        case = "busy" if rep % 2 == 0 else "idle"
        bound = BUSY_GIVE_UP_S if case == "busy" else IDLE_GIVE_UP_S
        await restock(db, make, minimum=100)  # fetches must have something to assign
        await asyncio.gather(*(round_trip(a) for a in crowd))  # healthy before the stall
        await until(lambda: dispatcher.inbox_depth == 0, timeout_s=5, what="an idle actor")
        epoch = dispatcher.epoch
        assert epoch is not None

        proxy.stall()
        stalled = time.monotonic()
        if case == "idle":  # nothing to decide: only the heartbeat can notice
            await until(lambda: not dispatcher.leading.is_set(), timeout_s=15, what="giving up")
            give_ups[case].append(time.monotonic() - stalled)
        waiting = [asyncio.create_task(dispatcher.fetch(a.agent_id)) for a in crowd]
        asked = time.monotonic()
        _, pending = await asyncio.wait(waiting, timeout=IDLE_GIVE_UP_S + 5)
        assert not pending, f"repetition {rep} ({case}): {len(pending)} waiters still hang"
        answers[case].append(time.monotonic() - asked)
        outcomes = [t.exception() for t in waiting]
        assert all(isinstance(o, Unavailable) for o in outcomes), f"{rep} ({case}): {outcomes}"
        if case == "busy":
            await until(lambda: not dispatcher.leading.is_set(), timeout_s=15, what="giving up")
            give_ups[case].append(time.monotonic() - stalled)
        with pytest.raises(Unavailable):  # refused at once while it cannot lead
            await asyncio.wait_for(dispatcher.fetch(crowd[0].agent_id), 0.5)

        proxy.resume()
        resumed = time.monotonic()
        await asyncio.wait_for(dispatcher.leading.wait(), 15)
        recoveries.append(time.monotonic() - resumed)
        assert dispatcher.epoch is not None and dispatcher.epoch > epoch
        assert dispatcher._core.snapshot() == await database_snapshot(db)

    await asyncio.gather(*(round_trip(a) for a in crowd))
    counts = await check_invariants(db, ledger)
    for case, bound in (("busy", BUSY_GIVE_UP_S), ("idle", IDLE_GIVE_UP_S)):
        report(f"{case} stall: fetches answered 503 after {summary(answers[case])}")
        report(f"{case} stall → leadership given up: {summary(give_ups[case])} (bound {bound} s)")
    for case, bound in (("busy", BUSY_GIVE_UP_S), ("idle", IDLE_GIVE_UP_S)):
        assert max(answers[case]) <= bound, f"{case}: waiters answered after {answers[case]}"
        assert max(give_ups[case]) <= bound, (
            f"{case} stall: leadership given up {max(give_ups[case]):.2f} s after the stall;"
            f" bound {bound:.2f} s (write_timeout_s={OPTIONS.write_timeout_s},"
            f" heartbeat_interval_s={OPTIONS.heartbeat_interval_s})"
        )
    report(f"resume → leading again: {summary(recoveries)}; {counts}")


TAKEOVER_BOUND_S = 10.0  # the default write_timeout_s (5 s) + a heartbeat + slack


@pytest.mark.slow
async def test_a_standby_takes_over_from_a_leader_cut_off_by_a_partition(
    proxy: Proxy, servers, session, database_url, db, probe, report
):
    """A partition between the leader and PostgreSQL: nothing flows, nothing closes. The
    leader stops deciding on its own (above); the service as a whole must too come back: the
    standby, which reaches PostgreSQL directly, must take over within a bounded time while
    the partition lasts. That needs PostgreSQL to end the partitioned leader's session (the
    lock is held by that session, not by the process).

    `proxy` comes first so that it is torn down last, after `servers` has stopped the leader
    whose connections run through it."""
    (leader,) = servers.spawn(1, DATABASE_URL=proxy.dsn(database_url))
    await leader.wait_ready(session, probe.headers, want="leader")
    (standby,) = await servers.start(session, probe.headers, want="standby")
    before = await db.fetchrow("SELECT epoch, holder_pid FROM dispatcher_leadership")

    proxy.stall()
    stalled = time.monotonic()
    try:
        took = None
        while time.monotonic() - stalled < TAKEOVER_BOUND_S:
            if (await standby.fetch(session, probe.headers, timeout_s=1.0)).status == 200:
                took = time.monotonic() - stalled
                break
            await asyncio.sleep(0.05)
        holders = await lock_holders(db)
        lost = leader.events("leadership_lost")
    finally:
        proxy.resume()
    report(
        f"partitioned leader → standby 200: {'never' if took is None else f'{took:.2f} s'}"
        f" within {TAKEOVER_BOUND_S} s; the old leader logged leadership_lost: {bool(lost)};"
        f" lock still held by its backend: {holders == [before['holder_pid']]}"
    )
    await standby.wait_ready(session, probe.headers, want="leader", timeout_s=15)
    counts = await check_invariants(db)
    report(f"after the partition healed: {counts}")
    assert took is not None, (
        f"the standby never led during a {TAKEOVER_BOUND_S} s partition of the leader: the"
        f" partitioned leader's backend (pid {before['holder_pid']}) kept the advisory lock"
        f" (holders {holders}); the leader itself gave up: {bool(lost)}"
    )
