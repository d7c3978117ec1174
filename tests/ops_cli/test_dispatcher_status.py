"""`tickets dispatcher status`: the leader, the session holding the lock, the standbys."""

from __future__ import annotations

import asyncio
import re
import time

import asyncpg

from tests.cli.conftest import Tickets, explain
from tests.ops_cli.conftest import DEADLINE_S, run_json
from web.keys import DISPATCHER


async def wait_for_waiters(db: asyncpg.Connection, lock_key: int, count: int) -> None:
    """`standing_by` is set before the standby's session reaches pg_advisory_lock: wait
    (bounded) until that many sessions wait for the lock."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = $1",
            lock_key,
        )
        if waiting == count:
            return
        assert time.monotonic() < deadline, f"{waiting} waiting for the lock, not {count}"
        await asyncio.sleep(0.02)


async def test_status_shows_the_leader_and_one_standby(
    tickets: Tickets, leader, standby, db, settings
) -> None:
    await wait_for_waiters(db, settings.dispatcher_lock_key, 1)
    dispatcher = leader.app[DISPATCHER]

    status = await run_json(tickets, "dispatcher", "status")

    assert status["state"] == "leading"
    assert status["leader"]["identity"] == dispatcher.identity
    assert status["leader"]["epoch"] == dispatcher.epoch
    lock = status["lock"]
    assert lock["held"] is True
    assert lock["pid"] == status["leader"]["holder_pid"]
    assert lock["client_addr"] == "127.0.0.1"
    assert lock["backend_start"] is not None
    assert status["standby_count"] == 1
    (waiting,) = status["standbys"]
    assert waiting["pid"] != lock["pid"]
    assert waiting["waiting_since"] is not None
    # The same as a table.
    result = await tickets.run("dispatcher", "status", env={"COLUMNS": "120"})
    assert result.returncode == 0, explain(result)
    assert dispatcher.identity in result.stdout
    assert f"held by backend {lock['pid']} from 127.0.0.1:" in result.stdout
    assert re.search(r"standbys\s+1\s", result.stdout)


async def test_status_without_a_server(tickets: Tickets) -> None:
    status = await run_json(tickets, "dispatcher", "status")

    assert status["state"] == "none"
    assert status["lock"] == {"held": False}
    assert status["standby_count"] == 0
    result = await tickets.run("dispatcher", "status")
    assert result.returncode == 0, explain(result)
    assert "none: no process holds the dispatcher lock" in result.stdout


async def test_status_while_a_new_leader_has_not_claimed_its_epoch(
    tickets: Tickets, db, settings
) -> None:
    """A session holds the lock, but the leadership row names someone else (or nobody)."""
    await db.execute("SELECT pg_advisory_lock($1)", settings.dispatcher_lock_key)

    status = await run_json(tickets, "dispatcher", "status")

    assert status["state"] == "taking_over"
    assert status["lock"]["pid"] == await db.fetchval("SELECT pg_backend_pid()")


async def test_status_ignores_the_same_lock_key_in_another_database(
    tickets: Tickets, database_url: str, template_ready: str, settings
) -> None:
    """Advisory locks belong to a database: a leader of another database is not ours."""
    other = await asyncpg.connect(template_ready)  # the server's maintenance database
    try:
        await other.execute("SELECT pg_advisory_lock($1)", settings.dispatcher_lock_key)
        status = await run_json(tickets, "dispatcher", "status")
    finally:
        await other.close()

    assert status["state"] == "none"
    assert status["lock"] == {"held": False}
