"""`tickets release`: through the running leader (the admin mailbox), or as the leader itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import asyncpg
from aiohttp.test_utils import TestClient

from tests.cli.conftest import Tickets, explain
from tests.ops_cli.conftest import DEADLINE_S, run_json
from tests.support.in_process import AppServer
from web.app import create_app
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"


async def fetch(client: TestClient, headers: dict[str, str]) -> list[int]:
    response = await client.post(FETCH, headers=headers)
    assert response.status == 200, await response.text()
    return [ticket["id"] for ticket in (await response.json())["tickets"]]


async def states(db: asyncpg.Connection, ids: list[int]) -> list[tuple[str, int | None]]:
    rows = await db.fetch(
        "SELECT status, agent_id FROM tickets WHERE id = ANY($1::bigint[]) ORDER BY id", ids
    )
    return [(row["status"], row["agent_id"]) for row in rows]


async def test_release_through_the_running_leader(tickets: Tickets, leader, make, db) -> None:
    ids = await make.tickets(6)
    alice = await make.agent(username="alice", capacity=3)
    bob = await make.agent(username="bob", capacity=3)
    held = await fetch(leader, alice.headers)
    assert held == ids[:3]
    epoch = await db.fetchval("SELECT epoch FROM dispatcher_leadership")

    answer = await run_json(tickets, "release", str(alice.agent_id))

    assert answer == {
        "agent_id": alice.agent_id,
        "username": "alice",
        "released": held,
        "count": 3,
        "via": leader.app[DISPATCHER].identity,
        "mode": "leader",
    }
    assert await states(db, held) == [("unassigned", None)] * 3
    logged = await db.fetch(
        "SELECT ticket_id, agent_id, epoch FROM ticket_events WHERE event = 'released'"
        " ORDER BY ticket_id"
    )
    assert [(r["ticket_id"], r["agent_id"], r["epoch"]) for r in logged] == [
        (ticket, alice.agent_id, epoch) for ticket in held
    ]
    # The leader did it: nobody else took the lock, and its memory agrees with the database.
    assert await db.fetchval("SELECT epoch FROM dispatcher_leadership") == epoch
    assert await fetch(leader, bob.headers) == held  # back at the head of the queue
    assert await fetch(leader, alice.headers) == ids[3:]


async def test_release_by_username_prints_what_it_released(tickets: Tickets, leader, make) -> None:
    ids = await make.tickets(2)
    carol = await make.agent(username="carol", capacity=5)
    assert await fetch(leader, carol.headers) == ids

    result = await tickets.run("release", "--username", "carol")

    assert result.returncode == 0, explain(result)
    identity = leader.app[DISPATCHER].identity
    assert result.stdout == (
        f"released 2 tickets of agent {carol.agent_id} (carol)"
        f" (through the leader {identity}): {ids[0]}, {ids[1]}\n"
    )
    again = await tickets.run("release", "--username", "carol")
    assert again.returncode == 0, explain(again)
    assert "held no tickets; nothing released" in again.stdout


async def test_release_without_a_leader_leads_itself(
    tickets: Tickets, make, db, settings, aiohttp_client
) -> None:
    ids = await make.tickets(5)
    dave = await make.agent(username="dave", capacity=3)
    erin = await make.agent(username="erin", capacity=2)
    # Held from an earlier leader's time; no server runs now.
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY($2::bigint[])",
        dave.agent_id,
        ids[:3],
    )

    answer = await run_json(tickets, "release", str(dave.agent_id))

    assert answer["mode"] == "self"
    assert answer["via"].startswith("cli:")
    assert answer["released"] == ids[:3]
    assert await states(db, ids[:3]) == [("unassigned", None)] * 3
    leadership = await db.fetchrow("SELECT epoch, holder FROM dispatcher_leadership")
    assert (leadership["epoch"], leadership["holder"]) == (1, answer["via"])
    # It let go of the lock on its way out: the next server leads at once, and hands the
    # released tickets out first.
    assert await lock_holders(db, settings.dispatcher_lock_key) == []
    server = await aiohttp_client(AppServer(create_app(settings)))
    await asyncio.wait_for(server.app[DISPATCHER].leading.wait(), DEADLINE_S)
    assert await fetch(server, erin.headers) == ids[:2]


async def test_release_of_an_unknown_agent_exits_1(tickets: Tickets, leader, make) -> None:
    user = await make.user(username="frank")  # a user, but not an agent
    for args in (["999999"], ["--username", "nobody"], ["--username", user.username]):
        result = await tickets.run("release", *args)
        assert result.returncode == 1, explain(result)
        assert "There is no agent" in result.stderr
        assert result.stdout == ""


async def test_release_needs_exactly_one_way_to_name_the_agent(tickets: Tickets) -> None:
    for args in ([], ["3", "--username", "alice"], ["not-a-number"], ["0"], [str(2**63)]):
        result = await tickets.invoke("release", *args)
        assert result.exit_code == 1, explain(result)
        assert "Traceback" not in result.output


async def test_release_exits_2_when_the_lock_holder_does_not_answer(
    tickets: Tickets, make, db, settings
) -> None:
    """A session holds the lock but is no dispatcher (it never claimed the epoch): nobody
    answers, and this command cannot lead."""
    agent = await make.agent()
    await db.execute("SELECT pg_advisory_lock($1)", settings.dispatcher_lock_key)

    result = await tickets.run("release", str(agent.agent_id), "--timeout", "0.5")

    assert result.returncode == 2, explain(result)
    assert "No dispatcher took the lead within 0.5 s" in result.stderr
    assert result.stdout == ""


async def lock_holders(db: asyncpg.Connection, lock_key: int) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = $1",
        lock_key,
    )
    return [row["pid"] for row in rows]


async def test_release_asks_the_server_that_took_the_lock_first(
    leader, make, db, settings, database_url
) -> None:
    """A server leads: the command's own dispatcher stands by, sees who leads, and asks
    that one."""
    from cli.dispatch import _release_through_dispatcher
    from storage.database import Database

    ids = await make.tickets(2)
    gina = await make.agent(username="gina", capacity=2)
    assert await fetch(leader, gina.headers) == ids
    database = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        released = await asyncio.wait_for(
            _release_through_dispatcher(settings, database, gina.agent_id, "gina", 5),
            DEADLINE_S,
        )
    finally:
        await database.close()

    assert released.mode == "leader"
    assert released.via == leader.app[DISPATCHER].identity
    assert released.ticket_ids == ids
    assert await states(db, ids) == [("unassigned", None)] * 2
    assert await lock_holders(db, settings.dispatcher_lock_key) == [
        await db.fetchval("SELECT holder_pid FROM dispatcher_leadership")
    ]


async def test_a_leader_that_goes_without_answering_hands_the_release_over(
    make, db, settings, database_url
) -> None:
    """Another `tickets release` leads, does its own release and stops, never reading this
    one's request: this command's dispatcher then gets the lock and does it itself. It used
    to wait out --timeout, exit 2 and release nothing."""
    from cli.dispatch import _release_through_dispatcher
    from storage.database import Database
    from storage.leadership import LeaderConnection

    ids = await make.tickets(2)
    hana = await make.agent(username="hana", capacity=2)
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY($2::bigint[])",
        hana.agent_id,
        ids,
    )
    # Leads (the lock and the row) and never reads the admin mailbox.
    mute = await LeaderConnection.acquire(
        database_url, lock_key=settings.dispatcher_lock_key, holder="cli:mute", idle_timeout_s=30
    )
    database = await Database.connect(database_url, min_size=1, max_size=2)
    try:
        releasing = asyncio.ensure_future(
            _release_through_dispatcher(settings, database, hana.agent_id, "hana", 20)
        )
        await asyncio.sleep(1.0)  # it has seen the mute leader and asked it
        assert not releasing.done()
        await mute.close()
        released = await asyncio.wait_for(releasing, 10)  # far below the 20 s timeout
    finally:
        await mute.close()
        await database.close()

    assert released.mode == "self"
    assert released.ticket_ids == ids
    assert await states(db, ids) == [("unassigned", None)] * 2


async def test_release_of_more_tickets_than_a_notification_carries(
    tickets: Tickets, leader, make, db
) -> None:
    """PostgreSQL refuses a NOTIFY payload of 8000 bytes or more: the leader's answer listing
    a thousand 7-digit ids would be one. It crashed the leader's dispatcher, and the command
    then said nothing was released. The answer now names the audit log's entry instead."""
    await db.execute("SELECT setval(pg_get_serial_sequence('tickets', 'id'), 5000000)")
    ids = await make.tickets(1000)
    big = await make.agent(username="big", capacity=1000)
    other = await make.agent(username="other", capacity=5)
    assert await fetch(leader, big.headers) == ids
    dispatcher = leader.app[DISPATCHER]
    epoch = dispatcher.epoch

    answer = await run_json(tickets, "release", str(big.agent_id))

    assert answer["released"] == ids
    assert answer["count"] == 1000
    assert answer["mode"] == "leader"
    assert await states(db, ids) == [("unassigned", None)] * 1000
    # The leader answered without losing its footing, and hands the tickets out again.
    assert dispatcher.epoch == epoch
    assert dispatcher.stats.leadership_lost == 0
    assert await fetch(leader, other.headers) == ids[:5]


async def test_an_answer_too_long_to_send_is_logged_and_the_leader_leads_on(
    leader, make, db
) -> None:
    """A request id near the payload limit makes even the short answer too long to send."""
    ids = await make.tickets(20)
    agent = await make.agent(username="dora", capacity=20)
    assert await fetch(leader, agent.headers) == ids
    dispatcher = leader.app[DISPATCHER]
    epoch, released = dispatcher.epoch, dispatcher.stats.released
    request = {"id": "x" * 7940, "op": "release", "agent_id": agent.agent_id}

    await db.execute("SELECT pg_notify('dispatcher_admin', $1)", json.dumps(request))

    for _ in range(100):
        if dispatcher.stats.released > released:
            break
        await asyncio.sleep(0.05)
    assert await states(db, ids) == [("unassigned", None)] * 20
    # A fetch is decided after the release's answer went (or did not).
    response = await leader.post(FETCH, headers=agent.headers)
    assert response.status == 200, await response.text()
    assert dispatcher.epoch == epoch
    assert dispatcher.stats.leadership_lost == 0


@contextlib.asynccontextmanager
async def row_locked(database_url: str, ticket_id: int) -> AsyncIterator[None]:
    """A ticket row held by another session's open transaction, for the duration."""
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("UPDATE tickets SET title = title WHERE id = $1", ticket_id)
            yield
    finally:
        await locker.close()


async def test_a_release_blocked_by_a_locked_row_fails_at_once_and_changes_nothing(
    tickets: Tickets, leader, make, db, database_url
) -> None:
    """The leader failed the release after the row-lock wait, and answered nothing: the
    command waited out its 10 s and said the release might still happen."""
    ids = await make.tickets(2)
    agent = await make.agent(username="pat", capacity=2)
    assert await fetch(leader, agent.headers) == ids
    async with row_locked(database_url, ids[1]):
        result = await tickets.run("release", str(agent.agent_id), "--timeout", "30")

    assert result.returncode == 2, explain(result)
    assert "could not be committed" in result.stderr, explain(result)
    assert "may still happen" not in result.stderr
    assert await states(db, ids) == [("assigned", agent.agent_id)] * 2


async def test_a_release_asked_while_the_load_is_blocked_fails_at_once(
    tickets: Tickets, leader, make, db, database_url
) -> None:
    """While the leader's load waits for another session's lock it refuses everyone; a
    request from the CLI was dropped unanswered, and the command waited out its timeout."""
    ids = await make.tickets(3)
    agent = await make.agent(username="quin", capacity=3)
    assert await fetch(leader, agent.headers) == ids
    dispatcher = leader.app[DISPATCHER]
    async with row_locked(database_url, ids[2]):
        await db.execute("UPDATE agents SET capacity = 1 WHERE id = $1", agent.agent_id)
        for _ in range(200):
            if dispatcher.blocked:
                break
            await asyncio.sleep(0.05)
        assert dispatcher.blocked
        result = await tickets.run("release", str(agent.agent_id), "--timeout", "30")

    assert result.returncode == 2, explain(result)
    assert "could not be committed" in result.stderr, explain(result)
