"""A standby that goes away leaves no session behind.

A standby waits inside `pg_advisory_lock`, and a backend waiting for a lock reads nothing from
its client: when the standby stops or dies, PostgreSQL learns it only by checking the socket
(client_connection_check_interval). Without that, every stopped standby left a session queued
for the lock, `tickets dispatcher status` counted it as a standby, and rolling restarts used up
max_connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from dispatcher.actor import Dispatcher, DispatcherOptions
from tests.faults.drills import until
from tests.support.invariants import lock_holders, lock_waiters

OPTIONS = DispatcherOptions()
ROOT = Path(__file__).resolve().parents[2]

# A standby in a process of its own: waits for the lock until killed.
_STANDBY = """
import asyncio, sys
from storage.leadership import LeaderConnection

async def main():
    await LeaderConnection.acquire(
        sys.argv[1], lock_key=int(sys.argv[2]), holder="killed-standby", idle_timeout_s=5
    )

asyncio.run(main())
"""


async def _leader(database_url: str, identity: str) -> Dispatcher:
    dispatcher = Dispatcher(database_url, identity=identity, options=OPTIONS)
    await dispatcher.start()
    return dispatcher


async def test_a_stopped_standby_leaves_no_session_waiting_for_the_lock(database_url, db):
    leader = await _leader(database_url, "leader")
    try:
        await asyncio.wait_for(leader.leading.wait(), 10)
        holders = await lock_holders(db)
        for _ in range(3):
            standby = await _leader(database_url, "standby")
            await asyncio.wait_for(standby.standing_by.wait(), 10)
            await until(lambda: _waiting(db, 1), timeout_s=5, what="the standby queued")
            await standby.stop()
            await until(lambda: _waiting(db, 0), timeout_s=5, what="its session gone")
        assert leader.role == "leader"
        assert await lock_holders(db) == holders
    finally:
        await leader.stop()


async def test_a_killed_standby_leaves_no_session_waiting_for_the_lock(database_url, db):
    leader = await _leader(database_url, "leader")
    standby = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _STANDBY,
        database_url,
        str(OPTIONS.lock_key),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await asyncio.wait_for(leader.leading.wait(), 10)
        await until(lambda: _waiting(db, 1), timeout_s=10, what="the standby queued")
        standby.send_signal(signal.SIGKILL)
        await asyncio.wait_for(standby.wait(), 5)
        await until(lambda: _waiting(db, 0), timeout_s=5, what="its session gone")
        assert leader.role == "leader"
    finally:
        if standby.returncode is None:
            standby.kill()
            await asyncio.wait_for(standby.wait(), 5)
        await leader.stop()


async def _waiting(db, count: int) -> bool:
    return len(await lock_waiters(db)) == count
