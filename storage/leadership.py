"""The dispatcher's dedicated connection: it holds the leadership lock and carries every write.

Design
======

Only one dispatcher may decide at a time. The leader holds a PostgreSQL *session* advisory
lock on a connection of its own, opened with `asyncpg.connect` — never a pool connection,
because a pool resets returned connections with `pg_advisory_unlock_all()`. The lock is
taken once (advisory locks stack, so a second take would need a second unlock).

Every batch is written **on that same connection**. If the session ends (the process died,
the connection was cut, an operator ran `pg_terminate_backend`), PostgreSQL releases the
lock and no later write from the old leader can reach the database: a commit proves the
lock was held. As a second fence, each acquisition bumps `dispatcher_leadership.epoch` and
every write is conditional on it, so even a write that somehow arrived late would match
no row.

A standby waits inside `pg_advisory_lock`, so it takes over the moment the leader's session
ends, without polling.

This module owns the SQL; the decisions and the waiting are dispatcher/actor.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.errors import DatabaseUnavailable, Diverged, Fenced, StorageError, translated
from storage.queries import QUERIES
from storage.wire import as_matrix

# How soon PostgreSQL notices that a standby waiting for the lock has gone away.
_CLIENT_CHECK_MS = 1000


class NotSafeForLeadership(StorageError):
    """The database connection cannot guarantee what the dispatcher relies on."""


@dataclass(frozen=True, slots=True)
class SnapshotRows:
    agents: list[tuple[int, int, bool]]  # id, capacity, is_active
    held: list[tuple[int, int]]  # ticket id, agent id
    unassigned: list[int]  # ascending, at most the window
    complete: bool  # True when `unassigned` is every unassigned ticket


class LeaderConnection:
    def __init__(self, connection: asyncpg.Connection, epoch: int) -> None:
        self._connection = connection
        self.epoch = epoch

    @classmethod
    async def acquire(
        cls,
        dsn: str,
        *,
        lock_key: int,
        holder: str,
        idle_timeout_s: float,
        row_lock_wait_s: float | None = None,
        statement_limit_s: float | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> LeaderConnection:
        """Connect, wait as long as it takes for the lock, then claim a new epoch.

        `idle_timeout_s`: the server ends the session when the leader sends nothing for this
        long (a healthy leader heartbeats far more often). Without it a leader cut off by a
        network partition would keep the lock — and every standby out — until TCP noticed,
        hours later; with it the lock frees itself and a standby takes over.

        `row_lock_wait_s`: how long, once leading, a statement waits for a row another
        session has locked (plain SQL left in an open transaction) before failing with
        RowLocked. Set only after the advisory lock is held: lock_timeout bounds that wait
        too, and a standby must wait for it without limit.

        `statement_limit_s`: once leading, the server cancels a statement that runs this long
        (QueryCanceled, read as DatabaseUnavailable): lock_timeout bounds each lock wait, not
        their sum, and a batch that waits for several locked rows in turn must still fail
        as a batch (503) before the caller's own timer takes it for a stalled connection.

        `on_connected` is called once the connection is up and waiting (the caller is then
        a standby). Raises DatabaseUnavailable or NotSafeForLeadership; the lock is never
        left held on failure (the connection is closed).
        """
        idle_ms = max(1, int(idle_timeout_s * 1000))
        with translated(connecting=True):
            connection = await asyncpg.connect(dsn)
        try:
            with translated():
                # SETs, not startup parameters: a session pooler refuses unknown ones. No
                # statement timeout: a standby waits inside pg_advisory_lock, unbounded.
                # DateStyle and TimeZone fix how the batch's timestamps print (storage/wire.py).
                # client_connection_check_interval: a backend waiting for the lock reads
                # nothing from its client, so without it a standby that went away (stopped,
                # killed) would leave its session queued for the lock, holding a connection
                # slot, until the lock came its way.
                await connection.execute(
                    "SET statement_timeout = 0;"
                    f" SET idle_session_timeout = {idle_ms};"
                    f" SET idle_in_transaction_session_timeout = {idle_ms};"
                    f" SET client_connection_check_interval = {_CLIENT_CHECK_MS};"
                    " SET DateStyle = 'ISO'; SET TimeZone = 'UTC'"
                )
                await _check_durability(connection)
                if on_connected is not None:
                    on_connected()
                await connection.execute("SELECT pg_advisory_lock($1)", lock_key)
                if row_lock_wait_s is not None:
                    # Before the claim: a leadership row locked by hand must not hold a new
                    # leader up in silence (RowLocked says why, and the wait is retried).
                    lock_ms = max(1, int(row_lock_wait_s * 1000))
                    await connection.execute(f"SET lock_timeout = {lock_ms}")
                if statement_limit_s is not None:
                    await connection.execute(
                        f"SET statement_timeout = {max(1, int(statement_limit_s * 1000))}"
                    )
                epoch = await connection.fetchval(QUERIES["dispatcher_leadership_claim"], holder)
        except BaseException:
            connection.terminate()
            raise
        return cls(connection, int(epoch))

    # ------------------------------------------------------------ liveness

    def is_closed(self) -> bool:
        return self._connection.is_closed()

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the connection is closed for any reason."""
        self._connection.add_termination_listener(lambda _connection: callback())

    def on_notification(
        self, callback: Callable[[str, str], None]
    ) -> Callable[[str], Coroutine[Any, Any, None]]:
        """Register a LISTEN callback (channel, payload); returns what LISTENs on a channel."""

        def listener(_connection: Any, _pid: int, channel: str, payload: str) -> None:
            callback(channel, payload)

        async def start(channel: str) -> None:
            with translated():
                await self._connection.add_listener(channel, listener)

        return start

    async def notify(self, channel: str, payload: str) -> None:
        with translated():
            await self._connection.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def heartbeat(self, timeout_s: float) -> None:
        """Raises DatabaseUnavailable when the session does not answer in time."""
        with translated():
            await asyncio.wait_for(self._connection.fetchval("SELECT 1"), timeout_s)

    async def row_lock_holders(self) -> list[dict[str, Any]]:
        """Other sessions holding locks on the tickets table: whom an operator should ask
        to commit or roll back when batches give up waiting for a row (RowLocked)."""
        with translated():
            rows = await self._connection.fetch(QUERIES["tickets_lock_holders"])
        return [dict(row) for row in rows]

    def abort(self) -> None:
        """Drop the connection at once (the server ends the session, releasing the lock)."""
        self._connection.terminate()

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._connection.close(), 2)
        except Exception:
            self._connection.terminate()

    # ------------------------------------------------------------ reads

    async def snapshot(self, window: int) -> SnapshotRows:
        """A consistent picture of agents, holdings and the oldest `window` unassigned ids."""
        with translated():
            async with self._connection.transaction(isolation="repeatable_read", readonly=True):
                agents = await self._connection.fetch(QUERIES["dispatcher_agents_all"])
                held = await self._connection.fetch(QUERIES["tickets_held_all"])
                ids: list[int] = await self._connection.fetchval(
                    QUERIES["tickets_unassigned_after"], 0, window + 1
                )
        return SnapshotRows(
            agents=[(r["id"], r["capacity"], r["is_active"]) for r in agents],
            held=[(r["id"], r["agent_id"]) for r in held],
            unassigned=ids[:window],
            complete=len(ids) <= window,
        )

    async def agents(
        self, ids: Sequence[int]
    ) -> tuple[list[tuple[int, int, bool]], list[tuple[int, int]]]:
        """Agents not yet in memory and their held tickets."""
        with translated():
            agents = await self._connection.fetch(QUERIES["dispatcher_agents_by_ids"], list(ids))
            held = await self._connection.fetch(QUERIES["tickets_held_by_agents"], list(ids))
        return (
            [(r["id"], r["capacity"], r["is_active"]) for r in agents],
            [(r["id"], r["agent_id"]) for r in held],
        )

    async def unassigned_after(self, after: int, limit: int) -> list[int]:
        with translated():
            ids: list[int] = await self._connection.fetchval(
                QUERIES["tickets_unassigned_after"], after, limit
            )
        return ids

    async def unassigned_between(self, low: int, high: int, *, limit: int) -> list[int]:
        with translated():
            rows = await self._connection.fetch(
                QUERIES["tickets_unassigned_between"], low, high, limit
            )
        return [row["id"] for row in rows]

    async def ticket_facts(self, ids: Sequence[int]) -> dict[int, tuple[str, int | None]]:
        with translated():
            rows = await self._connection.fetch(QUERIES["tickets_facts_by_ids"], list(ids))
        return {row["id"]: (row["status"], row["agent_id"]) for row in rows}

    async def payloads(
        self, holders: Mapping[int, int], sold_now: Collection[int] = ()
    ) -> dict[int, asyncpg.Record]:
        """Held tickets' payloads by id, shaped as `commit_batch` returns them, for tickets
        (keys) held by the agents memory says (values); a ticket the database does not show
        held by that agent is left out, unless it is in `sold_now` (sold by the batch just
        committed) and sold by that agent."""
        with translated():
            rows = await self._connection.fetch(QUERIES["tickets_payload_by_ids"], sorted(holders))
        return {
            row["id"]: row
            for row in rows
            if row["agent_id"] == holders[row["id"]]
            and (row["status"] == "assigned" or (row["status"] == "sold" and row["id"] in sold_now))
        }

    # ------------------------------------------------------------ writes

    async def commit_batch(
        self,
        batch: int,
        *,
        assign_ids: Sequence[int],
        assign_agents: Sequence[int],
        sell_ids: Sequence[int],
        sell_agents: Sequence[int],
    ) -> dict[int, asyncpg.Record]:
        """Write a batch's assignments and sales (ticket ids, each beside its agent)
        atomically, in one statement and one round trip; returns the newly assigned
        tickets' payloads by id, their timestamps as text (`storage.wire.timestamp_from_text`).

        No ticket may be in both lists (the statement's parts share one snapshot). Raises
        Fenced, Diverged (nothing written), DatabaseUnavailable (outcome unknown only if the
        connection died during the commit; the caller reloads either way).
        """
        with translated():
            rows = await self._connection.fetch(
                QUERIES["tickets_commit_batch"],
                self.epoch,
                batch,
                as_matrix(assign_ids),
                as_matrix(assign_agents),
                as_matrix(sell_ids),
                as_matrix(sell_agents),
                len(assign_ids),
                len(sell_ids),
            )
        # Records, not dicts: thousands per batch, read once each by the reply.
        return {row["id"]: row for row in rows if row["id"] is not None}

    async def release(self, batch: int, agent_id: int, ticket_ids: Sequence[int]) -> None:
        with translated():
            async with self._connection.transaction():
                await self._release(batch, agent_id, ticket_ids)

    async def _release(self, batch: int, agent_id: int, ticket_ids: Sequence[int]) -> None:
        fenced, released = await self._connection.fetchrow(
            QUERIES["tickets_release_many_if_held"], self.epoch, batch, agent_id, list(ticket_ids)
        )
        _check_fence(fenced)
        _check_count("release", released, len(ticket_ids))

    async def delete_ticket(self, batch: int, ticket_id: int) -> str | None:
        """Delete an unassigned ticket. Returns None when deleted, else the ticket's status
        ('assigned' or 'sold'), or 'missing'."""
        with translated():
            async with self._connection.transaction():
                fenced, deleted = await self._connection.fetchrow(
                    QUERIES["tickets_delete_if_unassigned"], self.epoch, batch, ticket_id
                )
                _check_fence(fenced)
                if deleted:
                    return None
                status = await self._connection.fetchval(QUERIES["tickets_status_by_id"], ticket_id)
        return status or "missing"

    async def update_agent(
        self,
        batch: int,
        agent_id: int,
        *,
        capacity: int | None,
        is_active: bool | None,
        decide_release: Callable[[int, bool], Sequence[int]],
    ) -> tuple[int, bool] | None:
        """Change an agent and release what `decide_release(capacity, is_active)` says, in one
        transaction. Returns the new (capacity, is_active), or None for an unknown agent."""
        with translated():
            async with self._connection.transaction():
                row = await self._connection.fetchrow(
                    QUERIES["agents_update_dispatch"], agent_id, capacity, is_active
                )
                if row is None:
                    return None
                released = decide_release(row["capacity"], row["is_active"])
                if released:
                    await self._release(batch, agent_id, released)
        return row["capacity"], row["is_active"]

    async def delete_agent(self, agent_id: int) -> bool:
        """False when there is no such agent; Conflict when it has a history of tickets."""
        with translated():
            return (
                await self._connection.fetchval(QUERIES["agents_delete_by_id"], agent_id)
                is not None
            )


async def check_database(dsn: str) -> None:
    """Raise NotSafeForLeadership (or DatabaseUnavailable) before the service starts.

    Transaction pooling (pgbouncer's `pool_mode = transaction`) hands each transaction to
    whichever server connection is free, so a session advisory lock would not stay with
    us. Asking the backend's pid twice is not enough to see it (an idle pooler hands the
    same server connection back), so a second client holds a transaction open in between:
    through a transaction pooler the first client must then be given another backend.
    """
    # No named prepared statements: they would not survive a transaction pooler, and this
    # check must be able to report one rather than fail inside it.
    with translated(connecting=True):
        probe = await asyncpg.connect(dsn, statement_cache_size=0)
    with translated():
        try:
            await _check_durability(probe)
            first = await probe.fetchval("SELECT pg_backend_pid()")
            holder = await asyncpg.connect(dsn, statement_cache_size=0)
            try:
                async with holder.transaction():
                    await holder.fetchval("SELECT pg_backend_pid()")
                    second = await probe.fetchval("SELECT pg_backend_pid()")
            finally:
                await holder.close()
        finally:
            await probe.close()
    if first != second:
        raise NotSafeForLeadership(
            "the connection is transaction-pooled (the backend changes between transactions):"
            " session advisory locks cannot work through it. Connect to PostgreSQL directly or"
            " through a session-pooled bouncer."
        )


async def _check_durability(connection: asyncpg.Connection) -> None:
    """Refuse a session where 'committed' would not mean 'survives a crash'."""
    if await connection.fetchval("SHOW synchronous_commit") == "off":
        raise NotSafeForLeadership(
            "synchronous_commit is off on this database: an acknowledged assignment could be"
            " lost in a crash. Set synchronous_commit = on (or local) for this role/database."
        )


def _check_fence(fenced: int) -> None:
    if fenced != 1:
        raise Fenced()


def _check_count(what: str, done: int, expected: int) -> None:
    if done != expected:
        raise Diverged(f"{what}: {done} rows changed where {expected} were decided")


__all__ = [
    "DatabaseUnavailable",
    "Diverged",
    "Fenced",
    "LeaderConnection",
    "NotSafeForLeadership",
    "SnapshotRows",
]
