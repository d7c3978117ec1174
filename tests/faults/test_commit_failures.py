"""Drill 4: a batch's commit is made to fail by a real database fault, 50 times.

In-process: the app from create_app (the `client` fixture) talks to PostgreSQL through a
`Proxy`. Each repetition builds one batch of known composition — fetches that assign and
sells that sell, from direct dispatcher calls and HTTP requests — and makes its commit fail
with one of five faults, in turn:

* trigger: a BEFORE UPDATE trigger on tickets raises (armed by a flag row);
* not_valid_check: `ADD CONSTRAINT … CHECK (status <> 'sold') NOT VALID`, so the batch's
  assignments succeed and its sales fail, in the same transaction;
* divergence: the lowest queued ticket is deleted behind the dispatcher's back, so the guarded
  assignment matches fewer rows than decided;
* cut_before_commit: the proxy cuts the leader connection as the batch's statement goes by
  (a batch is one statement, its own transaction), dropping it;
* cut_after_commit: the proxy delivers the statement and then cuts: the server commits it,
  and the leader never hears back.

How the batch is assembled deterministically: the test locks `tickets` (ACCESS EXCLUSIVE),
sends a "plug" fetch that needs no write but must read tickets, so the actor blocks inside
that batch; the drill's requests then gather in the inbox; the fault is put in place in the
same transaction that holds the lock, and COMMIT lets everything go.

Asserted each time: every waiter of that batch gets 503 (CommitFailed), none 200; exactly one
batch failed, with all of them; afterwards the dispatcher's memory equals the database
(`_core.snapshot()` against a snapshot built in SQL). After the 50: the shared invariants.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import asyncpg
import pytest
import structlog

from config.settings import Settings
from dispatcher.actor import Dispatcher
from dispatcher.errors import CommitFailed
from tests.faults.drills import database_snapshot, repetitions, until
from tests.support.factories import Actor, Factory
from tests.support.invariants import Ledger, check_invariants
from tests.support.proxy import Proxy
from tests.support.servers import FETCH, SELL
from web.keys import DISPATCHER

KINDS = ("trigger", "not_valid_check", "divergence", "cut_before_commit", "cut_after_commit")
CAPACITY = 2

FAULT_MACHINERY = """
CREATE TABLE drill_fault (armed boolean NOT NULL);
INSERT INTO drill_fault VALUES (false);
CREATE FUNCTION drill_fault_raise() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT armed FROM drill_fault) THEN
        RAISE EXCEPTION 'drill: this commit is made to fail';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER drill_fault BEFORE UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION drill_fault_raise();
"""


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[Proxy]:
    async with Proxy.to(database_url) as running:
        yield running


@pytest.fixture
def settings(database_url: str, proxy: Proxy) -> Settings:
    # No periodic rescan: it reads tickets and could end up in the drill's batch. The plug
    # batch waits on the drill's table lock while the drill assembles the next batch: the
    # longest wait allowed, not the one second that answers an operator's stray lock.
    return Settings(
        database_url=proxy.dsn(database_url),
        db_pool_min_size=1,
        db_pool_max_size=10,
        log_level="warning",
        dispatcher_rescan_interval_s=3600,
        dispatcher_row_lock_wait_s=4.0,
    )


class Drill:
    """The app's dispatcher plus the ledger: direct calls record their answers like HTTP."""

    def __init__(self, client: Any, ledger: Ledger) -> None:
        self.client = client
        self.dispatcher = client.app[DISPATCHER]
        self.ledger = ledger

    async def fetch(self, actor: Actor) -> list[int]:
        assert actor.agent_id is not None
        return self.ledger.fetched(actor.agent_id, await self.dispatcher.fetch(actor.agent_id))

    async def sell(self, actor: Actor, ids: list[int]) -> None:
        assert actor.agent_id is not None
        assert await self.dispatcher.sell(actor.agent_id, ids) == sorted(ids)
        self.ledger.sale_acknowledged(actor.agent_id, ids)

    async def http(self, path: str, actor: Actor, payload: Any = None) -> tuple[int, Any, Any]:
        response = await self.client.post(path, json=payload, headers=actor.headers)
        return response.status, response.headers, await response.json()


@pytest.mark.slow
async def test_every_waiter_of_a_failed_commit_gets_503_and_memory_matches_the_database(
    client, database_url: str, db: asyncpg.Connection, make: Factory, proxy: Proxy, report
):
    drill = Drill(client, Ledger())
    dispatcher = drill.dispatcher
    await dispatcher.leading.wait()
    await db.execute(FAULT_MACHINERY)
    await make.tickets(2_000)
    group_a = [await make.agent(capacity=CAPACITY) for _ in range(3)]
    group_b = [await make.agent(capacity=CAPACITY) for _ in range(3)]
    plug = await make.agent(capacity=1)
    await drill.fetch(plug)  # it holds one ticket from now on: its fetches never write
    kinds_seen: dict[str, int] = defaultdict(int)
    recoveries: list[float] = []

    for rep in range(max(50, repetitions(50))):
        kind = KINDS[rep % len(KINDS)]
        fetchers, sellers = (group_a, group_b) if rep % 2 else (group_b, group_a)
        # Arrange: fetchers hold nothing (room to assign), sellers hold tickets to sell.
        for actor in fetchers:
            held = await drill.fetch(actor)
            if held:
                await drill.sell(actor, held)
        selling = {actor.agent_id: await drill.fetch(actor) for actor in sellers}
        assert all(len(ids) == CAPACITY for ids in selling.values())
        leader = await db.fetchrow("SELECT epoch, holder_pid FROM dispatcher_leadership")
        failed_before, reloads_before = dispatcher.stats.failed_commits, dispatcher.stats.reloads
        last_event = await db.fetchval("SELECT coalesce(max(id), 0) FROM ticket_events")

        with structlog.testing.capture_logs() as logs:
            locker = await asyncpg.connect(database_url)  # direct, not through the proxy
            try:
                await locker.execute("BEGIN; LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
                plugged = asyncio.create_task(dispatcher.fetch(plug.agent_id))
                await until(
                    partial(_waits_on_lock, db, leader["holder_pid"]),
                    timeout_s=3,
                    what="the plug batch blocks on the tickets lock",
                )
                waiters = [
                    asyncio.create_task(dispatcher.fetch(fetchers[0].agent_id)),
                    asyncio.create_task(dispatcher.fetch(fetchers[1].agent_id)),
                    asyncio.create_task(
                        dispatcher.sell(sellers[0].agent_id, selling[sellers[0].agent_id])
                    ),
                    asyncio.create_task(
                        dispatcher.sell(sellers[1].agent_id, selling[sellers[1].agent_id])
                    ),
                ]
                requests = [
                    asyncio.create_task(drill.http(FETCH, fetchers[2])),
                    asyncio.create_task(
                        drill.http(SELL, sellers[2], {"ticket_ids": selling[sellers[2].agent_id]})
                    ),
                ]
                expected = len(waiters) + len(requests)
                await until(
                    partial(_inbox_depth_is, dispatcher, expected),
                    timeout_s=3,
                    what="the drill's requests wait in the inbox",
                )
                leader_port = await db.fetchval(
                    "SELECT client_port FROM pg_stat_activity WHERE pid = $1", leader["holder_pid"]
                )
                await _arm(kind, locker, proxy, leader_port)
                await locker.execute("COMMIT")
            finally:
                await locker.close()

            plug_answer = await plugged
            assert plug.agent_id is not None
            drill.ledger.fetched(plug.agent_id, plug_answer)
            outcomes = await asyncio.gather(*waiters, return_exceptions=True)
            answers = await asyncio.gather(*requests)
            started = time.monotonic()
            if kind.startswith("cut"):
                await until(
                    partial(_leads_after, dispatcher, leader["epoch"]),
                    timeout_s=10,
                    what=f"{kind}: the dispatcher leads again",
                )
            else:
                await until(
                    partial(_reloaded_since, dispatcher, reloads_before),
                    timeout_s=10,
                    what=f"{kind}: the dispatcher reloads",
                )
            recoveries.append(time.monotonic() - started)
        await _disarm(kind, db, proxy)

        where = f"repetition {rep} ({kind})"
        assert all(isinstance(o, CommitFailed) for o in outcomes), f"{where}: {outcomes}"
        for status, headers, body in answers:
            assert status == 503, f"{where}: HTTP {status} {body}"
            assert headers.get("Retry-After") == "1", where
        failed = [e for e in logs if e["event"] == "batch_failed"]
        assert [e["size"] for e in failed] == [6], f"{where}: {failed}"
        assert dispatcher.stats.failed_commits == failed_before + 1, where
        assert dispatcher._core.snapshot() == await database_snapshot(db), where
        # The fault did what it says: the batch was rolled back, or (cut after COMMIT)
        # committed without anyone being told — its fetches' retries will return it.
        written = await db.fetch(
            "SELECT event, agent_id FROM ticket_events WHERE id > $1 AND event <> 'released'",
            last_event,
        )
        if kind == "cut_after_commit":
            assert {(e["event"], e["agent_id"]) for e in written} == {
                *(("assigned", a.agent_id) for a in fetchers),
                *(("sold", a.agent_id) for a in sellers),
            }, where
        else:
            assert written == [], f"{where}: {written}"
        kinds_seen[kind] += 1

    counts = await check_invariants(db, drill.ledger)
    report(f"failed commits: {dict(kinds_seen)}; all waiters 503, memory == database each time")
    report(
        f"recovery (reload or re-lead) after the failed batch: max {max(recoveries):.3f} s;"
        f" proxy connections opened: {proxy.connections}; {counts}"
    )


def _inbox_depth_is(dispatcher: Dispatcher, depth: int) -> bool:
    return dispatcher.inbox_depth == depth


def _leads_after(dispatcher: Dispatcher, epoch: int) -> bool:
    return dispatcher.role == "leader" and (dispatcher.epoch or 0) > epoch


def _reloaded_since(dispatcher: Dispatcher, reloads: int) -> bool:
    return dispatcher.stats.reloads > reloads


async def _waits_on_lock(db: asyncpg.Connection, pid: int) -> bool:
    return (
        await db.fetchval("SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", pid)
        == "Lock"
    )


async def _arm(kind: str, locker: asyncpg.Connection, proxy: Proxy, leader_port: int) -> None:
    """Put the fault in place inside the transaction that holds the tickets lock."""
    if kind == "trigger":
        await locker.execute("UPDATE drill_fault SET armed = true")
    elif kind == "not_valid_check":
        await locker.execute(
            "ALTER TABLE tickets ADD CONSTRAINT drill_no_sale CHECK (status <> 'sold') NOT VALID"
        )
    elif kind == "divergence":
        deleted = await locker.fetchval(
            "DELETE FROM tickets WHERE id = (SELECT min(id) FROM tickets"
            " WHERE status = 'unassigned') RETURNING id"
        )
        assert deleted is not None
    # The leader's next message after the plug batch is the drill batch's one statement.
    elif kind == "cut_before_commit":
        proxy.cut_at(b"", deliver=False, server_port=leader_port)
    elif kind == "cut_after_commit":
        proxy.cut_at(b"", deliver=True, server_port=leader_port)
    else:
        raise AssertionError(kind)


async def _disarm(kind: str, db: asyncpg.Connection, proxy: Proxy) -> None:
    if kind == "trigger":
        await db.execute("UPDATE drill_fault SET armed = false")
    elif kind == "not_valid_check":
        await db.execute("ALTER TABLE tickets DROP CONSTRAINT drill_no_sale")
    proxy.disarm()


async def test_a_batch_decided_on_top_of_a_failed_one_is_decided_again_not_failed(
    client, database_url: str, db: asyncpg.Connection, make: Factory
):
    """While batch N commits, the next is decided ahead (pipelining). When N fails, the
    batch built on its decisions was never sent: its commands go back to the inbox and,
    after the reload, are decided again, in the order they arrived, from what the database
    holds — 200, not 503."""
    dispatcher = client.app[DISPATCHER]
    await dispatcher.leading.wait()
    first, second, third, holder = [await make.agent(capacity=2) for _ in range(4)]
    # Only agents the dispatcher knows are decided ahead: a first trade each teaches it.
    await make.tickets(8)
    await until(lambda: dispatcher.queue_length == 8, timeout_s=3, what="warm-up tickets queued")
    for actor in (first, second, third, holder):
        held = [t["id"] for t in await dispatcher.fetch(actor.agent_id)]
        await dispatcher.sell(actor.agent_id, held)
    ids = await make.tickets(12)
    await until(
        lambda: dispatcher.queue_length == 12, timeout_s=3, what="the new tickets are queued"
    )
    holding = [t["id"] for t in await dispatcher.fetch(holder.agent_id)]
    assert holding == ids[0:2]
    leader_pid = await db.fetchval("SELECT holder_pid FROM dispatcher_leadership")
    failed_before = dispatcher.stats.failed_commits
    locker = await asyncpg.connect(database_url)
    try:
        await locker.execute("BEGIN; LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
        doomed = asyncio.create_task(dispatcher.fetch(first.agent_id))
        await until(
            lambda: _waits_on_lock(db, leader_pid),
            timeout_s=3,
            what="the first batch blocks on the tickets lock",
        )
        ahead = [
            asyncio.create_task(dispatcher.fetch(second.agent_id)),
            asyncio.create_task(dispatcher.fetch(third.agent_id)),
        ]
        # A sale, then a fetch by the same agent: decided again in this order, the fetch
        # tops up after the sale; the other way round it would answer with the sold two.
        sold = asyncio.create_task(dispatcher.sell(holder.agent_id, holding))
        topped_up = asyncio.create_task(dispatcher.fetch(holder.agent_id))
        await until(
            lambda: dispatcher._ahead.size == 4 and not dispatcher._inbox,
            timeout_s=3,
            what="all four later commands are decided ahead, none waits undecided",
        )
        # The first batch assigned ids[2:4]; deleting one makes its guarded write diverge.
        await locker.execute("DELETE FROM tickets WHERE id = $1", ids[2])
        await locker.execute("COMMIT")
    finally:
        await locker.close()

    with pytest.raises(CommitFailed):
        await asyncio.wait_for(doomed, 10)
    got = [[t["id"] for t in await asyncio.wait_for(task, 10)] for task in ahead]
    # Decided again after the reload, in arrival order, from the oldest tickets left.
    assert got == [ids[3:5], ids[5:7]]
    assert await asyncio.wait_for(sold, 10) == holding
    assert [t["id"] for t in await asyncio.wait_for(topped_up, 10)] == ids[7:9]
    assert dispatcher.stats.failed_commits == failed_before + 1
    assert dispatcher._core.snapshot() == await database_snapshot(db)
    retried = [t["id"] for t in await dispatcher.fetch(first.agent_id)]
    assert retried == ids[9:11]
