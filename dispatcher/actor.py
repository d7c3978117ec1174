"""The dispatcher actor: one asyncio task that owns the queue, decides in batches, commits, replies.

Theory of operation
===================

Every fetch, sell and assignment-changing admin request becomes a command in one inbox,
with a future its caller awaits. One task — and only one, in one process of the whole
deployment — drains the inbox and:

1. prepares: learns agents it has not met, tops the queue up from the database when it runs
   low, absorbs tickets announced by the insert trigger, and reads the facts a sale needs
   about tickets memory no longer tracks;
2. decides every fetch and sell of the batch with the pure state machine (dispatcher/core.py),
   which applies each decision to memory at once;
3. writes the whole batch in one transaction of guarded statements on the leader
   connection (storage/leadership.py), then reads what the replies must show;
4. answers every waiter — only now, after COMMIT;
5. runs admin commands (delete a ticket, change or delete an agent, release) one
   transaction each: they are rare and must not put a batch at risk.

While a batch commits, the next one gathers — and is decided as its commands arrive, when
that needs no database read (known agents, tickets memory tracks, a window that holds the
fetch) — so its one statement goes out the moment the previous one returns: PostgreSQL, the
bottleneck, does not wait on Python between batches. Batches grow with load and the cost of
a commit is shared by everyone in it. Each batch is still answered only after its own
commit, and a window running low is topped up in the same pipeline, right after a commit.

Failure handling
================

* A batch whose commit fails (any error: connection, fence, a guard matching fewer rows than
  decided) fails all its waiters with `CommitFailed` (HTTP 503 + Retry-After) and memory is
  rebuilt from the database (the source of truth) before anything else is decided. Nothing
  was acknowledged, so nothing acknowledged is lost; a fetch retried later gets exactly what
  was committed. The batch decided ahead on top of it was never sent: its commands go back
  to the inbox, in order, and are decided again after the reload.
* Losing the leader connection (terminated session, dead socket, a heartbeat that does not
  answer, a write that takes too long) ends leadership at once: every waiter gets 503, the
  connection is dropped, and the task goes back to waiting for the lock as a standby.
* A standby answers every dispatcher call with `NotLeader` at once; the lock wait itself
  happens in PostgreSQL, so it takes over the moment the leader's session ends.

Nothing here sleeps to "let things settle"; tests wait on `leading` / `standing_by`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from dispatcher import commands as cmd
from dispatcher.batch import Batch, Waiting, assigned_ticket, settle, settle_all
from dispatcher.core import (
    AgentState,
    DispatchCore,
    Fetched,
    Snapshot,
    Sold,
    TicketFact,
)
from dispatcher.errors import (
    AgentHoldsTickets,
    AgentNotAllowed,
    AgentNotFound,
    CommitFailed,
    NotLeader,
    SellRejected,
    TicketHeld,
    TicketNotFound,
    Unavailable,
)
from dispatcher.stats import DispatcherStats
from storage.errors import (
    Conflict,
    Diverged,
    Fenced,
    InvalidValue,
    RowLocked,
    StatementTimedOut,
    StorageError,
)
from storage.leadership import LeaderConnection, NotSafeForLeadership, check_database

log = structlog.get_logger("dispatcher")

# A lock another session holds, waited for too long: lock_timeout for one wait, the
# statement limit for several in turn. The write is undone; the same one works later.
_BLOCKED = (RowLocked, StatementTimedOut)

INSERT_CHANNEL = "tickets_inserted"
# Admin requests from other processes (the CLI) reach the leader here; answers go back on
# ADMIN_REPLY_CHANNEL with the request's id. Keep in sync with cli/dispatch.py.
ADMIN_CHANNEL = "dispatcher_admin"
ADMIN_REPLY_CHANNEL = "dispatcher_admin_reply"
# An admin command runs up to this many statements (reading an agent it has not met, then
# a transaction of two), each bounded by the statement limit: its step is given as many
# write timeouts, not one, before it counts as a stalled connection.
ADMIN_STEP_STATEMENTS = 4
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. A release of about 900 tickets
# with 7-digit ids lists more: its answer names the audit log's entry instead.
NOTIFY_PAYLOAD_MAX_BYTES = 7900
# A user's activity changed (the users trigger of migration 0007): the payload is its agent's
# id, whose state the leader re-reads.
AGENT_CHANNEL = "dispatcher_agent_changed"


@dataclass(frozen=True, kw_only=True)
class DispatcherOptions:
    window_size: int = 100_000
    max_batch: int = 1000
    # An inbox this deep means the database cannot keep up; refuse fast rather than queue
    # requests that would time out anyway.
    max_inbox: int = 50_000
    refill_chunk: int = 10_000
    # A safety net only: notifications arrive on the leader connection itself, and losing
    # that connection means a full reload anyway. A rescan reads the whole window.
    rescan_interval_s: float = 30.0
    heartbeat_interval_s: float = 0.5
    # A batch taking this long means the connection is stalled: give leadership up.
    write_timeout_s: float = 5.0
    # A row locked by another session (plain SQL in an open transaction) is waited for this
    # long, then the batch answers 503 and is retried. Well below the write timeout, so such
    # a lock costs the batches that touch the row, not leadership (and every agent a stall).
    row_lock_wait_s: float = 1.0
    retry_after_s: int = 1
    lock_key: int = 7_302_211


class LeadershipLost(Exception):
    """The leader connection is gone or stalled; this process must stop deciding."""


class _DoneButDiverged(Exception):
    """An admin command is committed, and showed memory disagreeing with the database: its
    caller gets `result`, then memory is rebuilt."""

    def __init__(self, result: Any, why: str) -> None:
        super().__init__(why)
        self.result = result


class _BatchFailed(Exception):
    """A batch's commit failed (the cause says why); nothing of it was acknowledged."""

    def __init__(self, batch: Batch) -> None:
        super().__init__(f"batch {batch.number} failed")
        self.batch = batch


class _Upkeep:
    """When the leader's connection is next due a heartbeat and a rescan.

    Both fall due by the clock, busy or idle. The session's idle timeout ends a leader that
    sends nothing for a few seconds, and a stream of batches that write nothing (agents at
    capacity, an empty queue) sends nothing; a stream that never lets the inbox empty would
    otherwise never rescan, and a missed notification would stay missed while it lasts.
    """

    def __init__(self, options: DispatcherOptions) -> None:
        self._options = options
        now = time.monotonic()
        self.heartbeat_at = now + options.heartbeat_interval_s
        self.rescan_at = now + options.rescan_interval_s

    def spoke(self) -> None:
        """A statement ran on the connection: no heartbeat needed for a while."""
        self.heartbeat_at = time.monotonic() + self._options.heartbeat_interval_s

    def rescanned(self) -> None:
        self.rescan_at = time.monotonic() + self._options.rescan_interval_s
        self.spoke()

    def seconds_left(self) -> float:
        return max(0.0, min(self.heartbeat_at, self.rescan_at) - time.monotonic())


@dataclass
class _InsertNews:
    """Ranges of ids the insert trigger announced since they were last absorbed."""

    low: int | None = None
    high: int | None = None

    def add(self, low: int, high: int) -> None:
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)

    def take(self) -> tuple[int, int] | None:
        if self.low is None or self.high is None:
            return None
        taken = (self.low, self.high)
        self.low = self.high = None
        return taken


class Dispatcher:
    """The dispatcher of this process, leader or standby; see the module docstring."""

    def __init__(self, dsn: str, *, identity: str, options: DispatcherOptions) -> None:
        self._dsn = dsn
        self.identity = identity
        self.options = options
        self.stats = DispatcherStats()
        self.role = "starting"
        self.epoch: int | None = None
        self.leading = asyncio.Event()
        self.standing_by = asyncio.Event()
        # Top the window up early and in small chunks: one 10k-id read per batch costs a few
        # milliseconds, where refilling half a window at once stalls every waiter.
        window = options.window_size
        self._core = DispatchCore(
            window_size=window, low_water=max(window // 2, window - options.refill_chunk)
        )
        self._inbox: deque[Waiting] = deque()
        self._wake = asyncio.Event()
        self._inserts = _InsertNews()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._connection: LeaderConnection | None = None
        self._batch_number = 0
        # The batch being decided while another commits (empty when none is), and the one
        # the writer is committing.
        self._ahead = Batch()
        self._writing = Batch()
        self._upkeep = _Upkeep(options)
        # Memory cannot be loaded while another session holds a lock the load needs.
        self._blocked = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Check the database is fit for leadership (raises NotSafeForLeadership, with a
        message for the operator), then run as leader or standby in the background."""
        await check_database(self._dsn)
        self._task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        """Finish the batch in flight, answer every waiter, release the lock."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            if self.role != "leader":
                # A standby waits inside pg_advisory_lock: nothing to finish, so cut it short.
                task.cancel()
            _, pending = await asyncio.wait({task}, timeout=10)
            if pending:
                task.cancel()
                await asyncio.wait({task})
        self._fail_all(NotLeader("This process is shutting down.", retry_after_s=1))
        self._become("stopped")

    @property
    def queue_length(self) -> int:
        return self._core.queue_length

    @property
    def inbox_depth(self) -> int:
        """Commands whose batch has not gone to the database yet, decided ahead or not."""
        return len(self._inbox) + self._ahead.size

    @property
    def blocked(self) -> bool:
        """Leading, but memory cannot be loaded past a lock another session holds."""
        return self._blocked

    @property
    def held_count(self) -> int:
        return self._core.held_count

    # ------------------------------------------------------------ the service
    # What the HTTP API, health/metrics and the CLI call. Every change of who holds what goes
    # through these, into the one actor, so memory and database never disagree. Unavailable
    # (NotLeader, CommitFailed) means nothing of the call took effect: retrying is safe.

    async def fetch(self, agent_id: int) -> list[dict[str, Any]]:
        """Every ticket the agent holds after a top-up to its capacity, oldest first (dicts
        with the API ticket's keys). Safe to retry: a repeat returns the same tickets plus any
        top-up. Raises AgentNotAllowed, Unavailable."""
        rows: list[Mapping[str, Any]] = await self._submit(cmd.Fetch(agent_id))
        return [assigned_ticket(row, agent_id) for row in rows]

    async def sell(self, agent_id: int, ticket_ids: list[int]) -> list[int]:
        """Sell all of ticket_ids, all or nothing (ids already sold by this agent are a no-op
        success); returns them sorted. Raises SellRejected, AgentNotAllowed, Unavailable."""
        sold, already_sold = await self._submit(cmd.Sell(agent_id, tuple(ticket_ids)))
        return sorted((*sold, *already_sold))

    async def delete_ticket(self, ticket_id: int) -> None:
        """Delete an unassigned ticket. Raises TicketNotFound, TicketHeld, Unavailable."""
        await self._submit(cmd.DeleteTicket(ticket_id))

    async def update_agent(
        self, agent_id: int, *, capacity: int | None = None, is_active: bool | None = None
    ) -> list[int]:
        """Change capacity and/or activity; returns the tickets the change released (all on
        deactivation, the newest excess below a lowered capacity). With no change, re-read
        the agent: it is active only while its user is too. Raises AgentNotFound,
        Unavailable."""
        result: list[int] = await self._submit(cmd.UpdateAgent(agent_id, capacity, is_active))
        return result

    async def agent_changed(self, agent_id: int) -> None:
        """The database changed what the agent may do (its user's activity): apply it now if
        this process leads. Nothing is lost otherwise: the leader learns it from the users
        trigger's NOTIFY and from every reload, and a deleted agent has nothing to apply."""
        with contextlib.suppress(Unavailable, AgentNotFound):
            await self.update_agent(agent_id)

    async def release_agent(self, agent_id: int) -> list[int]:
        """Return the agent's held tickets to the queue at their creation-order place."""
        result: list[int] = await self._submit(cmd.ReleaseAgent(agent_id))
        return result

    async def delete_agent(self, agent_id: int) -> None:
        """Delete an agent that holds nothing. Raises AgentNotFound, AgentHoldsTickets, storage
        Conflict (it has sold tickets: deactivate it instead), Unavailable."""
        await self._submit(cmd.DeleteAgent(agent_id))

    def tickets_inserted(self, low: int, high: int) -> None:
        """Tickets this process has just committed, ids `low`..`high`: when leading, every
        command submitted after this call is decided with them in the queue. The insert
        trigger's notification says the same, a few milliseconds later: a fetch right after
        a 201 could miss the new ticket."""
        if self.role == "leader":
            self._inserts.add(low, high)
            self._wake.set()

    async def _submit(self, command: cmd.Command) -> Any:
        if self.role != "leader" or self._stopping:
            raise NotLeader(retry_after_s=self.options.retry_after_s)
        if self._blocked:
            raise CommitFailed(
                "Another database session holds a lock the dispatcher needs; retry shortly.",
                retry_after_s=self.options.retry_after_s,
            )
        if len(self._inbox) >= self.options.max_inbox:
            self.stats.overloaded += 1
            raise Unavailable("The dispatcher is overloaded.", retry_after_s=1)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.append(Waiting(command, future))
        self._wake.set()
        # A caller that goes away (client disconnected) cancels only its own future: the
        # command stays in the inbox or batch and is committed or not on its own (settle
        # skips a cancelled future), and a retry sees the outcome. No shield needed, which
        # saves a future and two callbacks per request.
        return await future

    # ------------------------------------------------------------ leadership

    async def _run(self) -> None:
        backoff_s = 0.2
        while not self._stopping:
            self._become("standby")
            try:
                connection = await LeaderConnection.acquire(
                    self._dsn,
                    lock_key=self.options.lock_key,
                    holder=self.identity,
                    idle_timeout_s=self.options.write_timeout_s,
                    row_lock_wait_s=self.options.row_lock_wait_s,
                    # Below the write timeout, which would take the wait for a stall.
                    statement_limit_s=self.options.write_timeout_s * 0.8,
                )
            except NotSafeForLeadership as exc:
                log.error("leadership_refused", reason=str(exc))
                await self._back_off(30)
                continue
            except (StorageError, OSError) as exc:
                log.warning("leadership_wait_failed", error=str(exc), retry_in_s=backoff_s)
                await self._back_off(backoff_s)
                backoff_s = min(backoff_s * 2, 5)
                continue
            backoff_s = 0.2
            if self._stopping:
                await connection.close()
                break
            self._connection = connection
            try:
                await self._lead(connection)
            except asyncio.CancelledError:
                connection.abort()
                raise
            except (LeadershipLost, StorageError, OSError, TimeoutError) as exc:
                event = "leadership_lost" if self._count_lost() else "leadership_not_taken"
                log.warning(event, epoch=connection.epoch, error=repr(exc))
                self._fail_all(CommitFailed("Leadership was lost; retry shortly."))
                connection.abort()
            except Exception:
                # A bug must not leave the deployment without a dispatcher: give the lock
                # up (a standby, or this process after a fresh load, leads on) and go on.
                self._count_lost()
                log.exception("dispatcher_failed", epoch=connection.epoch)
                self._fail_all(CommitFailed("The dispatcher restarted; retry shortly."))
                connection.abort()
                await self._back_off(1)
            else:
                # Stopping (SIGTERM): every waiter was answered; a standby takes the lock now.
                log.info("leadership_released", epoch=connection.epoch, identity=self.identity)
                await connection.close()
            finally:
                self._connection = None
                self.epoch = None
        self._become("stopped")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _back_off(self, seconds: float) -> None:
        """Wait before trying to lead again. Only stopping cuts it short: the wake-up event
        is set by much else (the aborted connection's own lost-callback among them), and a
        failure that repeats would otherwise be retried in a tight loop, claiming an epoch
        and logging a traceback each time."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            await self._pause(left)

    def _count_lost(self) -> bool:
        """Count a leadership lost only if it was gained (and counted): one that failed
        while loading, before it ever decided, was never announced. True if counted."""
        if self.role != "leader":
            return False
        self.stats.leadership_lost += 1
        return True

    def _become(self, role: str) -> None:
        self.role = role
        if role == "leader":
            self.standing_by.clear()
            self.leading.set()
        else:
            self.leading.clear()
            if role == "standby":
                self.standing_by.set()

    async def _lead(self, connection: LeaderConnection) -> None:
        lost = asyncio.Event()

        def on_lost() -> None:
            lost.set()
            self._wake.set()

        connection.on_lost(on_lost)
        listen = connection.on_notification(self._on_notification)
        await listen(INSERT_CHANNEL)
        await listen(ADMIN_CHANNEL)
        await listen(AGENT_CHANNEL)
        self.epoch = connection.epoch
        await self._load(connection)
        self._become("leader")
        self.stats.leadership_gained += 1
        log.info("leadership_gained", epoch=connection.epoch, identity=self.identity)
        self._upkeep = _Upkeep(self.options)
        while True:
            if lost.is_set() or connection.is_closed():
                raise LeadershipLost("the leader connection closed")
            if self._stopping and not self._inbox:
                return
            if not await self._unless_diverged(connection, self._keep_up(connection)):
                continue
            if not self._inbox and self._inserts.low is None:
                await self._pause(self._upkeep.seconds_left())
                continue
            if not await self._unless_diverged(
                connection, self._guarded(self._absorb_inserts(connection))
            ):
                continue
            waiting = [
                self._inbox.popleft() for _ in range(min(len(self._inbox), self.options.max_batch))
            ]
            await self._run_batch(connection, waiting)

    async def _unless_diverged(self, connection: LeaderConnection, step: Any) -> bool:
        """Run a step between batches; False when it found memory wrong, which is then
        rebuilt from the database (nothing is decided or waiting meanwhile)."""
        try:
            await step
        except Diverged as exc:
            log.warning("memory_diverged", error=str(exc))
            await self._after_failure(connection)
            return False
        return True

    async def _keep_up(self, connection: LeaderConnection) -> None:
        """The rescan or the heartbeat, if one is due. Safe between any two batches: a
        rescan skips what memory holds, also what a batch decided ahead holds."""
        now = time.monotonic()
        if now >= self._upkeep.rescan_at:
            try:
                await self._guarded(self._rescan(connection))
            except _BLOCKED as exc:
                # A safety net skipped once (a table lock on tickets): the next one is due
                # in an interval, and nothing was decided on the read.
                await self._report_row_lock(connection, exc)
            self._upkeep.rescanned()
        elif now >= self._upkeep.heartbeat_at:
            await connection.heartbeat(timeout_s=self.options.write_timeout_s)
            self._upkeep.spoke()

    async def _guarded(self, work: Any, *, timeout_s: float | None = None) -> Any:
        """Bound a database step in time: a stalled connection means leadership is lost.

        `asyncio.timeout`, not `wait_for`: wait_for runs the step as a new task, and every
        such hop lets all the replies just settled run first — on the batch's critical path.
        """
        try:
            async with asyncio.timeout(timeout_s or self.options.write_timeout_s):
                return await work
        except TimeoutError as exc:
            raise LeadershipLost("a database step stalled") from exc

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == ADMIN_CHANNEL:
            self._on_admin_request(payload)
            return
        if channel == AGENT_CHANNEL:
            with contextlib.suppress(ValueError):
                self._enqueue_unawaited(cmd.UpdateAgent(int(payload), None, None))
            return
        low, _, high = payload.partition(",")
        with contextlib.suppress(ValueError):
            self._inserts.add(int(low), int(high))
            self._wake.set()

    def _on_admin_request(self, payload: str) -> None:
        """`{"id": str, "op": "release", "agent_id": int}` from another process."""
        try:
            request = json.loads(payload)
            reply_id = str(request["id"])
            if request["op"] != "release":
                raise ValueError(f"unknown op {request['op']!r}")
            agent_id = request["agent_id"]
            if type(agent_id) is not int or not 0 < agent_id < 2**63:
                raise ValueError(f"agent_id must be an id, not {str(agent_id)[:30]!r}")
            command = cmd.ReleaseAgent(agent_id)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("admin_request_refused", payload=payload[:200], error=str(exc))
            return
        self._enqueue_unawaited(command, reply_id=reply_id)

    def _enqueue_unawaited(self, command: cmd.Command, *, reply_id: str | None = None) -> None:
        """Queue a command nobody in this process awaits: its outcome is logged or sent back
        by NOTIFY, and retrieved here so that asyncio does not report it as lost."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve_outcome)
        self._inbox.append(Waiting(command, future, reply_id=reply_id))
        self._wake.set()

    # ------------------------------------------------------------ loading

    async def _reload(self, connection: LeaderConnection) -> None:
        """Rebuild memory from the database; repair holdings an agent may not have."""
        self._inserts = _InsertNews()
        window = self.options.window_size
        rows = await self._guarded(connection.snapshot(window))
        agents = {a: AgentState(capacity, active) for a, capacity, active in rows.agents}
        held: dict[int, list[int]] = defaultdict(list)
        for ticket, agent in sorted(rows.held):
            held[agent].append(ticket)
        for agent, tickets in held.items():
            state = agents[agent]
            keep = state.capacity if state.active else 0
            if len(tickets) > keep:
                # Changed behind our back (plain SQL): give the newest excess back.
                self._batch_number += 1
                await self._guarded(connection.release(self._batch_number, agent, tickets[keep:]))
                log.warning("excess_holdings_released", agent_id=agent, count=len(tickets) - keep)
                return await self._reload(connection)
        horizon = None if rows.complete else (rows.unassigned[-1] if rows.unassigned else 0)
        self._core.load(Snapshot(agents, held, rows.unassigned, horizon))
        self.stats.reloads += 1
        return None

    async def _rescan(self, connection: LeaderConnection) -> None:
        """Heal anything a lost notification left out: replace the queue with the database's.

        Raises Diverged when the database shows a ticket unassigned that memory says is held
        and no batch still to be written assigns (it was put back by plain SQL): left alone,
        newer tickets would go out before it for as long as memory lasts."""
        window = self.options.window_size
        ids = await connection.unassigned_after(0, window + 1)
        stale = [t for t in self._core.held_among(ids) if t not in self._ahead.assigned_now]
        if stale:
            raise Diverged(f"unassigned in the database, held in memory: {stale[:20]}")
        # Queued here, not unassigned there: deleted (the new queue simply lacks it), or
        # assigned by hand, which memory must learn, or an agent holds more than it knows.
        absent = self._core.queued_but_absent(ids, up_to=ids[-1] if len(ids) > window else None)
        if absent:
            facts = await connection.ticket_facts(absent)
            taken = [t for t, (_, agent) in facts.items() if agent is not None]
            if taken:
                raise Diverged(f"queued in memory, held in the database: {sorted(taken)[:20]}")
        horizon = None if len(ids) <= window else ids[window - 1]
        self._core.queue_rescanned(ids[:window], horizon=horizon)
        self.stats.rescans += 1

    async def _absorb_inserts(self, connection: LeaderConnection) -> None:
        announced = self._inserts.take()
        if announced is None:
            return
        low, high = announced
        horizon = self._core.horizon
        if horizon is not None:
            high = min(high, horizon)
        if low > high:
            return
        limit = self.options.window_size
        ids = await connection.unassigned_between(low, high, limit=limit + 1)
        if len(ids) > limit:
            # A bulk import larger than the window: the ordered rescan sets the horizon right.
            await self._rescan(connection)
        else:
            # Read now, with every decision committed (absorbing waits for the batches).
            self._core.tickets_added(ids, current=True)

    async def _learn_agents(self, connection: LeaderConnection, agent_ids: Iterable[int]) -> None:
        unknown = sorted({a for a in agent_ids if not self._core.knows_agent(a)})
        if not unknown:
            return
        agents, held = await connection.agents(unknown)
        holdings: dict[int, list[int]] = defaultdict(list)
        for ticket, agent in held:
            holdings[agent].append(ticket)
        try:
            for agent, capacity, active in agents:
                self._core.register_agent(agent, AgentState(capacity, active), holdings[agent])
        except ValueError:
            # Holdings the agent may not have (changed by plain SQL): the full reload
            # repairs them in the database and learns every agent at once.
            log.warning("agent_holdings_repaired", agent_ids=unknown)
            await self._reload(connection)

    async def _refill(self, connection: LeaderConnection, demand: int) -> None:
        """One chunk per batch, more only while this batch's fetches could go short."""
        while self._core.needs_refill(demand):
            after = self._core.refill_after()
            assert after is not None  # needs_refill implies a finite horizon
            room = self._core.window_size - self._core.queue_length
            wanted = min(room, max(self.options.refill_chunk, demand))
            ids = await connection.unassigned_after(after, wanted)
            self._core.refilled(ids, exhausted=len(ids) < wanted)
            if not ids or self._core.queue_length >= demand:
                break

    # ------------------------------------------------------------ a batch

    async def _run_batch(self, connection: LeaderConnection, waiting: list[Waiting]) -> None:
        trades = [w for w in waiting if isinstance(w.command, cmd.Trade)]
        admin = [w for w in waiting if not isinstance(w.command, cmd.Trade)]
        try:
            if trades:
                # Admin commands wait for the trades: no pipelining past them.
                await self._trade(connection, trades, pipeline=not admin)
            for item in admin:
                await self._administer(connection, item)
        except BaseException:
            # Leadership is going: whoever is still waiting learns it now, not never.
            settle_all(waiting, self._commit_failed())
            raise

    async def _trade(
        self, connection: LeaderConnection, waiting: list[Waiting], *, pipeline: bool = True
    ) -> None:
        """Decide and commit these trades, then keep the pipeline full.

        A writer task commits batch after batch; while one commits, this task decides the
        commands arriving meanwhile into the next (when that needs no database read). In
        the step that receives a result, the writer answers that batch's waiters and sends
        the next batch, so PostgreSQL does not wait on Python between batches. A batch that
        fails takes the one decided on top of it back to the inbox, undecided, before
        memory is reloaded.
        """
        try:
            await self._guarded(self._prepare(connection, waiting))
            facts = await self._guarded(self._sale_facts(connection, waiting))
        except _BLOCKED as exc:
            # A read waited too long for another session's lock (a table lock on tickets):
            # this batch fails as a commit would, and the load waits the lock out.
            self.stats.failed_commits += 1
            await self._report_row_lock(connection, exc)
            settle_all(waiting, self._commit_failed())
            await self._after_failure(connection)
            return
        except (StorageError, OSError) as exc:
            raise LeadershipLost(f"preparing a batch failed: {exc!r}") from exc
        first = Batch()
        deferred = [item for item in waiting if not self._decide(first, item, facts)]
        self._inbox.extendleft(reversed(deferred))
        self._ahead = Batch()
        writer = asyncio.create_task(self._write(connection, first, pipeline))
        writer.add_done_callback(lambda _: self._wake.set())
        try:
            while not writer.done():
                if pipeline:
                    self._decide_ahead(self._ahead)
                self._wake.clear()
                if not writer.done():
                    await self._wake.wait()
            writer.result()
        except _BatchFailed as failure:
            self.stats.failed_commits += 1
            error = failure.__cause__
            if isinstance(error, Fenced):
                # The epoch moved on: this process no longer leads, whatever its lock says
                # (only a hand edit of the leadership row gets here while the lock holds).
                # Reloading would fail every write again for ever; leading afresh claims a
                # new epoch.
                error = LeadershipLost(f"fenced: {error}")
            if isinstance(error, LeadershipLost):
                self._fail_pipeline(failure.batch)
                raise error from None
            if isinstance(error, _BLOCKED):
                await self._report_row_lock(connection, error)
            log.warning(
                "batch_failed",
                batch=failure.batch.number,
                size=failure.batch.size,
                error=repr(error),
            )
            settle_all(failure.batch.arrived, self._commit_failed())
            # Decided on top of the failed batch and never sent: decided again after the
            # reload, in the order they arrived, as if they had just arrived.
            self._inbox.extendleft(reversed(self._ahead.arrived))
            self._ahead = Batch()
            await self._after_failure(connection)
        except BaseException:
            writer.cancel()
            self._fail_pipeline(self._writing)
            raise
        finally:
            self._ahead = self._writing = Batch()

    def _fail_pipeline(self, batch: Batch) -> None:
        """Leadership is going: whoever is still waiting learns it now, not never."""
        settle_all([*batch.arrived, *self._ahead.arrived], self._commit_failed())

    def _commit_failed(self) -> CommitFailed:
        return CommitFailed(retry_after_s=self.options.retry_after_s)

    async def _write(self, connection: LeaderConnection, batch: Batch, pipeline: bool) -> None:
        """Commit and answer `batch`, then whatever was decided ahead meanwhile, until
        nothing was. Answering before sending the next batch costs PostgreSQL a fraction of
        a millisecond and saves every waiter a turn of the event loop."""
        while True:
            self._writing = batch
            self._batch_number += 1
            batch.number = self._batch_number
            batch.started = time.perf_counter()
            try:
                payloads = await self._commit(connection, batch)
            except Exception as exc:
                raise _BatchFailed(batch) from exc
            diverged = self._answer(batch, payloads)
            if diverged:
                # The batch itself is committed and answered; what was decided ahead on the
                # wrong memory is decided again after the reload, as if it had just arrived.
                raise _BatchFailed(Batch(number=batch.number)) from Diverged(
                    f"held in memory, not in the database: {sorted(diverged)[:20]}"
                )
            try:
                await self._keep_up(connection)
            except Diverged as exc:
                raise _BatchFailed(Batch()) from exc
            except (StorageError, OSError) as exc:
                raise _BatchFailed(self._ahead) from LeadershipLost(f"upkeep failed: {exc!r}")
            except LeadershipLost as exc:
                raise _BatchFailed(self._ahead) from exc
            if not pipeline:
                return
            # Commands that arrived since the deciding task last had its turn (it queues
            # behind every request handler woken meanwhile): ending the pipeline here
            # would idle the connection until that task and a fresh batch came round.
            self._decide_ahead(self._ahead)
            if not self._ahead.size:
                return
            batch, self._ahead = self._ahead, Batch()
            self.stats.pipelined += 1

    def _decide(
        self, batch: Batch, item: Waiting, facts: dict[int, TicketFact], *, ahead: bool = False
    ) -> bool:
        """Decide one trade into the batch; False when it must wait for a later batch.

        Ahead of time (another batch still committing) only what needs no database read
        is decided: known agents, tickets memory tracks, a window that holds the fetch.
        """
        core = self._core
        command = item.command
        if isinstance(command, cmd.Fetch):
            agent = command.agent_id
            if ahead:
                if not core.knows_agent(agent) or self._window_short_for(agent):
                    return False
            elif batch.size and self._window_short_for(agent):
                # The window ran dry mid-batch while the store has more: this fetch waits
                # for the next batch's refill rather than getting short measure.
                return False
            batch.add_fetch(item, core.fetch(agent))
            return True
        assert isinstance(command, cmd.Sell)
        if ahead and (
            not core.knows_agent(command.agent_id) or core.unknown_ticket_ids(command.ticket_ids)
        ):
            return False
        if batch.assigned_now.intersection(command.ticket_ids):
            # Selling what this very batch assigns (only a client guessing ids can): the
            # batch's one statement cannot do both, so it waits for the next.
            return False
        batch.add_sell(item, core.sell(command.agent_id, command.ticket_ids, facts))
        return True

    def _decide_ahead(self, ahead: Batch) -> None:
        """Move the inbox's leading trades into the next batch while they need no read.

        Stops at the first command that cannot go (an admin command, announced inserts
        to absorb first, anything needing the database): the inbox stays in order.
        """
        if self._inserts.low is not None:
            return
        inbox = self._inbox
        while inbox and ahead.size < self.options.max_batch:
            item = inbox[0]
            if not isinstance(item.command, cmd.Trade):
                return
            if not self._decide(ahead, item, {}, ahead=True):
                return
            inbox.popleft()

    async def _commit(
        self, connection: LeaderConnection, batch: Batch
    ) -> dict[int, Mapping[str, Any]]:
        """Write the batch; returns the payload of every ticket its fetches answer with."""
        payloads: dict[int, Mapping[str, Any]] = {}
        if batch.assign_ids or batch.sell_ids:
            payloads = await self._guarded(
                connection.commit_batch(
                    batch.number,
                    assign_ids=batch.assign_ids,
                    assign_agents=batch.assign_agents,
                    sell_ids=batch.sell_ids,
                    sell_agents=batch.sell_agents,
                )
            )
            self._upkeep.spoke()
        batch.committed = time.perf_counter()
        if self._core.needs_refill():
            # Topping the window up here, in the pipeline, keeps the batches decided
            # ahead from running it dry (which would stall them for a refill of their own).
            await self._guarded(self._refill(connection, 0))
        # Usually empty: a fetch answers with what the commit returned, and only tickets
        # held from earlier batches (a retry, a partial sale) need reading.
        missing = {t: a for t, a in batch.held_before.items() if t not in batch.assigned_now}
        if missing:
            sold_now = set(batch.sell_ids).intersection(missing)
            payloads.update(await self._guarded(connection.payloads(missing, sold_now)))
        return payloads

    def _answer(self, batch: Batch, payloads: dict[int, Mapping[str, Any]]) -> list[int]:
        """Settle every waiter; returns the tickets memory says are held that the database
        does not show held (changed behind the dispatcher's back, by plain SQL): a fetch
        answering with one of them gets 503 instead, and memory must be rebuilt."""
        self.stats.batch_committed(
            size=batch.size,
            assigned=len(batch.assign_ids),
            sold=len(batch.sell_ids),
            commit_s=batch.committed - batch.started,
        )
        log.debug(
            "batch_committed",
            batch=batch.number,
            size=batch.size,
            duration_ms=round((time.perf_counter() - batch.started) * 1000, 2),
        )
        diverged: list[int] = []
        for item, decision in batch.decided:
            if isinstance(decision, Fetched):
                # Rows, not the API's dicts: those are built by each caller's own task, after
                # the next batch has gone out (fetch() and sell() finish the answers).
                try:
                    rows = [payloads[t] for t in decision.held]
                except KeyError:  # rare: one pass over the held tickets in the usual case
                    diverged.extend(t for t in decision.held if t not in payloads)
                    settle(item, error=self._commit_failed())
                    continue
                settle(item, result=rows)
            elif isinstance(decision, Sold):
                settle(item, result=(decision.sold, decision.already_sold))
            elif decision.reason == "not_held":
                settle(item, error=SellRejected(decision.detail))
            else:
                settle(item, error=AgentNotAllowed())
        return diverged

    async def _prepare(self, connection: LeaderConnection, waiting: list[Waiting]) -> None:
        agent_ids = [w.command.agent_id for w in waiting if isinstance(w.command, cmd.Trade)]
        await self._learn_agents(connection, agent_ids)
        fetchers = [w.command.agent_id for w in waiting if isinstance(w.command, cmd.Fetch)]
        if fetchers:
            await self._refill(connection, self._core.demand(fetchers))

    def _window_short_for(self, agent_id: int) -> bool:
        core = self._core
        return core.horizon is not None and core.queue_length < core.demand([agent_id])

    async def _sale_facts(
        self, connection: LeaderConnection, waiting: list[Waiting]
    ) -> dict[int, TicketFact]:
        asked = {
            t for w in waiting if isinstance(w.command, cmd.Sell) for t in w.command.ticket_ids
        }
        unknown = self._core.unknown_ticket_ids(asked)
        if not unknown:
            return {}
        found = await connection.ticket_facts(sorted(unknown))
        return {t: TicketFact(status, agent) for t, (status, agent) in found.items()}

    async def _report_row_lock(
        self, connection: LeaderConnection, error: RowLocked | StatementTimedOut
    ) -> None:
        """Tell the operator who holds the lock: until that session ends its transaction,
        every batch that needs it answers 503."""
        self.stats.row_lock_waits_given_up += 1
        try:
            holders = await self._guarded(connection.row_lock_holders())
        except (StorageError, OSError, LeadershipLost) as exc:
            holders = [{"unknown": repr(exc)}]
        log.error(
            "batch_blocked_by_row_lock",
            error=str(error),
            waited_s=self.options.row_lock_wait_s,
            lock_holders=holders,
            hint="another session holds a lock the dispatcher waited for (a row or table of"
            " tickets, agents or the leadership row): end that session's transaction",
        )

    async def _after_failure(self, connection: LeaderConnection) -> None:
        """Memory may hold uncommitted decisions: rebuild it, or give leadership up."""
        if connection.is_closed():
            raise LeadershipLost("the leader connection closed during a commit")
        try:
            await self._load(connection)
        except (StorageError, OSError) as exc:
            raise LeadershipLost(f"reload after a failed commit failed: {exc!r}") from exc

    async def _load(self, connection: LeaderConnection) -> None:
        """Rebuild memory from the database, waiting out a lock another session holds on
        what the load reads or repairs (a table lock on tickets; a held ticket's row, when
        an agent must give back holdings changed by plain SQL). Giving leadership up would
        not help: the next leader's load meets the same lock. Nothing can be decided
        meanwhile, so whoever waits, or asks, is answered 503 at once."""
        while True:
            try:
                await self._reload(connection)
            except _BLOCKED as exc:
                self._blocked = True
                await self._report_row_lock(connection, exc)
                await self._refuse_inbox(connection)
                await self._back_off(self.options.retry_after_s)
                if self._stopping or connection.is_closed():
                    raise LeadershipLost("stopped while the load waited for a lock") from exc
            else:
                self._blocked = False
                return

    async def _refuse_inbox(self, connection: LeaderConnection) -> None:
        """Answer everyone waiting 503; a request from another process (the CLI) is told so
        too, rather than left to wait out its timeout."""
        waiting = list(self._inbox)
        self._fail_all(self._commit_failed())
        for item in waiting:
            await self._reply_by_notify(
                connection,
                item,
                self._batch_number,
                ok=False,
                error=str(self._commit_failed()),
                retry=True,
            )

    # ------------------------------------------------------------ admin commands

    async def _administer(self, connection: LeaderConnection, item: Waiting) -> None:
        command = item.command
        self._batch_number += 1
        batch = self._batch_number
        try:
            result = await self._guarded(
                self._admin_step(connection, batch, command),
                timeout_s=self.options.write_timeout_s * ADMIN_STEP_STATEMENTS,
            )
        except _DoneButDiverged as done:
            settle(item, result=done.result)
            await self._reply_by_notify(connection, item, batch, ok=True, result=done.result)
            log.warning("memory_diverged", error=str(done))
            await self._after_failure(connection)
        except (AgentNotFound, AgentHoldsTickets, TicketNotFound, TicketHeld, Conflict) as exc:
            settle(item, error=exc)
            await self._reply_by_notify(connection, item, batch, ok=False, error=str(exc))
        except LeadershipLost:
            self.stats.failed_commits += 1
            raise
        except Fenced as exc:  # as for a batch (see _trade)
            self.stats.failed_commits += 1
            raise LeadershipLost(f"fenced: {exc}") from exc
        except Exception as exc:
            self.stats.failed_commits += 1
            if isinstance(exc, _BLOCKED):
                await self._report_row_lock(connection, exc)
            log.warning("admin_command_failed", command=repr(command), error=repr(exc))
            settle(item, error=self._commit_failed())
            # Told, not left to time out: nothing of it took effect, so asking again is safe.
            await self._reply_by_notify(
                connection, item, batch, ok=False, error=str(self._commit_failed()), retry=True
            )
            await self._after_failure(connection)
        else:
            settle(item, result=result)
            await self._reply_by_notify(connection, item, batch, ok=True, result=result)

    async def _reply_by_notify(
        self,
        connection: LeaderConnection,
        item: Waiting,
        batch: int,
        *,
        ok: bool,
        result: Any = None,
        error: str | None = None,
        retry: bool = False,
    ) -> None:
        """Answer a request from another process (the CLI). What cannot be sent is logged:
        the change itself is committed either way, and the asker says it may still happen."""
        if item.reply_id is None:
            return
        answer = {"id": item.reply_id, "ok": ok, "result": result, "error": error, "retry": retry}
        payload = json.dumps(answer)
        if len(payload.encode()) > NOTIFY_PAYLOAD_MAX_BYTES:
            # The released ids are in the audit log, under this epoch and batch.
            answer["result"] = None
            answer["logged_as"] = {"epoch": connection.epoch, "batch": batch}
            payload = json.dumps(answer)
        try:
            await self._guarded(connection.notify(ADMIN_REPLY_CHANNEL, payload))
        except InvalidValue as exc:  # an absurdly long request id
            log.warning("admin_reply_not_sent", reply_id=item.reply_id[:100], error=str(exc))

    async def _admin_step(
        self, connection: LeaderConnection, batch: int, command: cmd.Command
    ) -> Any:
        if isinstance(command, cmd.DeleteTicket):
            status = await connection.delete_ticket(batch, command.ticket_id)
            if status == "missing":
                raise TicketNotFound()
            if status is not None:
                raise TicketHeld()
            if not self._core.ticket_removed(command.ticket_id):
                # The delete stands (the database had the ticket unassigned: put back by
                # plain SQL); memory, which has it held or sold, is what was wrong.
                raise _DoneButDiverged(None, f"ticket {command.ticket_id} was held in memory")
            return None
        agent_id = command.agent_id
        await self._learn_agents(connection, [agent_id])
        if not self._core.knows_agent(agent_id):
            raise AgentNotFound()
        if isinstance(command, cmd.UpdateAgent):
            released: list[int] = []

            def decide(capacity: int, is_active: bool) -> list[int]:
                released[:] = self._core.set_agent(
                    agent_id, AgentState(capacity, is_active)
                ).ticket_ids
                return released

            await connection.update_agent(
                batch,
                agent_id,
                capacity=command.capacity,
                is_active=command.is_active,
                decide_release=decide,
            )
            self.stats.released += len(released)
            return released
        if isinstance(command, cmd.ReleaseAgent):
            ids = list(self._core.release(agent_id).ticket_ids)
            if ids:
                await connection.release(batch, agent_id, ids)
            self.stats.released += len(ids)
            return ids
        if isinstance(command, cmd.DeleteAgent):
            if not self._core.forget_agent(agent_id):
                raise AgentHoldsTickets()
            if not await connection.delete_agent(agent_id):
                raise AgentNotFound()
            return None
        raise TypeError(f"unknown command {command!r}")

    def _fail_all(self, error: Exception) -> None:
        settle_all(self._inbox, error)
        self._inbox.clear()


def _retrieve_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
