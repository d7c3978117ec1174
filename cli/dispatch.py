"""`tickets release` and `tickets dispatcher status`: the dispatcher seen and driven from outside.

Who leads
=========

The leader is the session holding the dispatcher's advisory lock (Settings.dispatcher_lock_key)
*and* named by `dispatcher_leadership.holder_pid`, the row it claimed its epoch in. Between
taking the lock and claiming, a new leader holds the lock under the old row; this module
calls that "taking over" and never mistakes the old row for the leader. Sessions waiting
for the lock are the standbys. All of it comes from pg_locks and pg_stat_activity of this
database (storage/sql/ops.sql), so it is true whichever process asks.

Releasing
=========

Only the leader may change assignments (it holds them in memory and fences its writes), so
`release` never writes tickets itself:

* a process holds the lock: the request goes to it through the admin mailbox
  (dispatcher/actor.py): LISTEN on the reply channel first, then NOTIFY the request with an
  id of its own, then wait (bounded) for the answer carrying that id;
* nobody holds it: this process runs a Dispatcher of its own (identity `cli:<host>:<pid>`),
  waits (bounded) until it leads, releases, and stops it, which releases the lock. Should a
  server take the lock first, it asks that server through the mailbox instead.

A request whose answer did not come in time may still be carried out later; it is safe to
check with `tickets stats` and to run `release` again (releasing nothing held is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
import structlog
from rich.console import Console
from rich.table import Table

from cli.support import Failure, Invalid, TicketsGroup, load_settings, open_database, run
from config.settings import Settings
from dispatcher.actor import ADMIN_CHANNEL, ADMIN_REPLY_CHANNEL
from storage.database import Database

DEFAULT_TIMEOUT_S = 10.0
# How often the wait for the in-process dispatcher to lead looks at who holds the lock.
_LEAD_POLL_S = 0.1


# ------------------------------------------------------------------ who leads


@dataclass(frozen=True, slots=True)
class LockSession:
    """A database session holding or waiting for the dispatcher's lock."""

    pid: int
    client_addr: str | None  # None: a Unix socket, or hidden (pg_read_all_stats shows it)
    client_port: int | None
    backend_start: datetime | None
    waiting_since: datetime | None  # None for the holder

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "client_addr": self.client_addr,
            "client_port": self.client_port,
            "backend_start": self.backend_start,
            "waiting_since": self.waiting_since,
        }

    @property
    def where(self) -> str:
        if self.client_addr is None:  # pg_stat_activity hides it from unprivileged roles
            return "a local socket (or an address this role may not see)"
        port = f":{self.client_port}" if self.client_port not in (None, -1) else ""
        return f"{self.client_addr}{port}"


@dataclass(frozen=True, slots=True)
class Leadership:
    """The leadership row (the last claim) and the sessions on the lock, read together."""

    identity: str | None
    epoch: int
    since: datetime | None
    holder_pid: int | None
    lock: LockSession | None  # the session holding the lock, None when nobody does
    standbys: tuple[LockSession, ...]

    @property
    def leading(self) -> bool:
        """A process leads: it holds the lock and the row names its session."""
        return self.lock is not None and self.lock.pid == self.holder_pid

    @property
    def state(self) -> str:
        """'leading', 'taking_over' (locked, epoch not claimed yet) or 'none'."""
        if self.lock is None:
            return "none"
        return "leading" if self.leading else "taking_over"

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "leader": {
                "identity": self.identity,
                "epoch": self.epoch,
                "since": self.since,
                "holder_pid": self.holder_pid,
            },
            "lock": {"held": self.lock is not None, **(self.lock.as_json() if self.lock else {})},
            "standby_count": len(self.standbys),
            "standbys": [standby.as_json() for standby in self.standbys],
        }


async def read_leadership(database: Database, *, lock_key: int) -> Leadership:
    """Who leads, as the database says now (see the module docstring)."""
    row = await database.fetchrow("dispatcher_leadership_get")
    sessions = await database.fetch("ops_lock_sessions", lock_key)
    if row is None:  # the first migration inserts the row; only a hand-edited database lacks it
        row = {"epoch": 0, "holder": None, "since": None, "holder_pid": None}
    found = [
        (
            session["granted"],
            LockSession(
                pid=session["pid"],
                client_addr=session["client_addr"],
                client_port=session["client_port"],
                backend_start=session["backend_start"],
                waiting_since=session["waitstart"],
            ),
        )
        for session in sessions
    ]
    holders = [session for granted, session in found if granted]
    return Leadership(
        identity=row["holder"],
        epoch=row["epoch"],
        since=row["since"],
        holder_pid=row["holder_pid"],
        lock=holders[0] if holders else None,
        standbys=tuple(session for granted, session in found if not granted),
    )


# ------------------------------------------------------------------ output helpers


def json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(data: object) -> None:
    click.echo(json.dumps(data, default=json_default, indent=2))


def age(seconds: float | None) -> str:
    """A duration for people: '45s', '3m 12s', '2h 05m', '3d 4h'."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"{moment.isoformat(timespec='seconds')} ({age((now - moment).total_seconds())} ago)"


def leadership_rows(leadership: Leadership, now: datetime) -> list[tuple[str, str]]:
    """(label, value) lines describing the leadership, for `status` and `stats` alike."""
    lock = leadership.lock
    if leadership.state == "leading":
        assert lock is not None
        return [
            ("leader", leadership.identity or "-"),
            ("epoch", str(leadership.epoch)),
            ("since", when(leadership.since, now)),
            ("lock", f"held by backend {lock.pid} from {lock.where}"),
            ("session since", when(lock.backend_start, now)),
        ]
    if lock is not None:
        return [
            ("leader", f"taking over: backend {lock.pid} from {lock.where} holds the lock"),
            ("last leader", f"{leadership.identity or '-'} (epoch {leadership.epoch})"),
        ]
    return [
        ("leader", "none: no process holds the dispatcher lock"),
        ("last leader", f"{leadership.identity or '-'} (epoch {leadership.epoch})"),
        ("last since", when(leadership.since, now)),
    ]


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table


# ------------------------------------------------------------------ tickets dispatcher status


@click.group(cls=TicketsGroup)
def dispatcher() -> None:
    """Look at the dispatcher: which process leads, and how many wait as standbys."""


@dispatcher.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def status(as_json: bool) -> None:
    """Who leads (identity host:pid:port, epoch, since when), the database session holding
    the dispatcher lock (backend pid, client address, since when), and the standbys waiting
    for it.

    Exits 0 whether or not a process leads ("state" says which); 2 when the database cannot
    be reached.
    """
    settings = load_settings()
    leadership, now = run(_status(settings))
    if as_json:
        print_json(leadership.as_json())
        return
    rows = leadership_rows(leadership, now)
    rows.append(("standbys", str(len(leadership.standbys))))
    for standby in leadership.standbys:
        rows.append(
            (
                f"  backend {standby.pid}",
                f"from {standby.where}, waiting since {when(standby.waiting_since, now)}",
            )
        )
    Console().print(key_value_table("Dispatcher", rows))


async def _status(settings: Settings) -> tuple[Leadership, datetime]:
    async with open_database(settings, existing=True) as database:
        leadership = await read_leadership(database, lock_key=settings.dispatcher_lock_key)
        now = await database.fetchval("ops_now")
    return leadership, now


# ------------------------------------------------------------------ tickets release


class Refused(Exception):
    """The dispatcher refused the release (the agent is unknown to it)."""


@dataclass(frozen=True, slots=True)
class Released:
    agent_id: int
    username: str
    ticket_ids: list[int]
    via: str  # the identity of the dispatcher that did it
    mode: str  # "leader": the running leader did it; "self": this process led for it

    def as_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "username": self.username,
            "released": self.ticket_ids,
            "count": len(self.ticket_ids),
            "via": self.via,
            "mode": self.mode,
        }


@click.command()
# Ids are PostgreSQL bigints: a larger number names no agent, and asyncpg would refuse to send it.
@click.argument("agent_id", type=click.IntRange(min=1, max=2**63 - 1), required=False)
@click.option("--username", help="Name the agent by its username instead of AGENT_ID.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1, max=600),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the dispatcher: for the leader's answer, or to lead.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def release(agent_id: int | None, username: str | None, timeout_s: float, as_json: bool) -> None:
    """Give every ticket the agent AGENT_ID holds back to the queue.

    The tickets go out again first (they keep their place: oldest first). When a server
    leads, it does the release (asked through the database); when none runs, this command
    leads for the moment it takes.

    Exits 1 when there is no such agent; 2 when no dispatcher answered within --timeout
    (the release may still happen: check with `tickets stats`, or run it again).

    \b
    Examples:
      tickets release 42
      tickets release --username alice --json
    """
    if (agent_id is None) == (username is None):
        raise click.UsageError("Name the agent by AGENT_ID or by --username (one of them).")
    settings = load_settings()
    released = run(_release(settings, agent_id, username, timeout_s))
    if as_json:
        print_json(released.as_json())
        return
    who = f"agent {released.agent_id} ({released.username})"
    how = "through the leader" if released.mode == "leader" else "as the leader myself:"
    if not released.ticket_ids:
        click.echo(f"{who} held no tickets; nothing released ({how} {released.via}).")
        return
    ids = ", ".join(map(str, released.ticket_ids))
    click.echo(
        f"released {len(released.ticket_ids)} tickets of {who} ({how} {released.via}): {ids}"
    )


def cli_identity() -> str:
    return f"cli:{socket.gethostname()}:{os.getpid()}"


async def _release(
    settings: Settings, agent_id: int | None, username: str | None, timeout_s: float
) -> Released:
    async with open_database(settings, existing=True) as database:
        if agent_id is not None:
            agent = await database.fetchrow("ops_agent_by_id", agent_id)
            missing = f"There is no agent with id {agent_id}."
        else:
            agent = await database.fetchrow("ops_agent_by_username", username)
            missing = f"There is no agent named {username!r}."
        if agent is None:
            raise Invalid(missing)
        found_id, found_name = int(agent["agent_id"]), str(agent["username"])
        try:
            return await _release_through_dispatcher(
                settings, database, found_id, found_name, timeout_s
            )
        except Refused as exc:
            raise Invalid(f"The dispatcher refused: {exc}") from exc


async def ask_leader(database: Database, agent_id: int, *, timeout_s: float) -> list[int]:
    """Ask the leader to release `agent_id` through the admin mailbox; the released ids.

    Raises Refused (the leader said no), Failure (no answer within `timeout_s`)."""
    from storage.ops import listening

    request_id = f"{cli_identity()}:{uuid.uuid4().hex}"
    request = {"id": request_id, "op": "release", "agent_id": agent_id}
    loop = asyncio.get_running_loop()
    # The release's audit entry is written after this instant (same clock: the database's).
    asked_at = await database.fetchval("ops_now")
    async with listening(database.dsn, ADMIN_REPLY_CHANNEL) as listener:  # LISTEN before NOTIFY
        await listener.notify(ADMIN_CHANNEL, json.dumps(request))
        deadline = loop.time() + timeout_s
        while (payload := await listener.next(deadline - loop.time())) is not None:
            with contextlib.suppress(ValueError):
                answer = json.loads(payload)
                if isinstance(answer, dict) and answer.get("id") == request_id:
                    if not answer.get("ok"):
                        reason = str(answer.get("error") or "no reason given")
                        if answer.get("retry"):  # nothing happened; asking again is safe
                            raise Failure(f"The release could not be committed: {reason}")
                        raise Refused(reason)
                    if isinstance(logged := answer.get("logged_as"), dict):
                        # Too many ids for a notification: the audit log has them.
                        return await _released_as_logged(database, agent_id, logged, asked_at)
                    return sorted(int(ticket) for ticket in answer.get("result") or [])
    raise Failure(
        f"No answer from the dispatcher within {timeout_s:g} s; the release may still happen"
        " (check with `tickets stats`, or run it again)."
    )


async def _released_as_logged(
    database: Database, agent_id: int, logged: dict[str, Any], since: datetime
) -> list[int]:
    ids = await database.fetchval(
        "ops_released_in_batch", agent_id, int(logged["epoch"]), int(logged["batch"]), since
    )
    return sorted(ids or [])


async def _release_through_dispatcher(
    settings: Settings, database: Database, agent_id: int, username: str, timeout_s: float
) -> Released:
    """Ask the leading process to release; or, when none leads, lead for a moment and release.

    This process waits for the lock meanwhile, as a standby does: a leader that stops
    without answering (another `tickets release`, done with its own) hands the lock on,
    and this process then does the release itself instead of waiting out the timeout."""
    from dispatcher.actor import Dispatcher
    from dispatcher.errors import AgentNotFound, Unavailable
    from web.app import dispatcher_options

    identity = cli_identity()
    leader = Dispatcher(database.dsn, identity=identity, options=dispatcher_options(settings))
    with _dispatcher_logs(settings):
        await leader.start()
        try:
            other = await _lead_or_find_leader(leader, database, settings, timeout_s)
            if other is not None:
                ids = await _ask_unless_leading(leader, database, agent_id, timeout_s)
                if ids is not None:
                    return Released(agent_id, username, ids, other, "leader")
            try:
                ids = await leader.release_agent(agent_id)
            except AgentNotFound as exc:
                raise Refused(str(exc)) from exc
            except Unavailable as exc:
                raise Failure(f"The release could not be committed: {exc}") from exc
            return Released(agent_id, username, sorted(ids), identity, "self")
        finally:
            await leader.stop()  # lets go of the lock (or of the wait for it)


async def _ask_unless_leading(
    leader: Any, database: Database, agent_id: int, timeout_s: float
) -> list[int] | None:
    """The leader's answer, or None once `leader` (this process's) leads before it came."""
    asking = asyncio.ensure_future(ask_leader(database, agent_id, timeout_s=timeout_s))
    leading = asyncio.ensure_future(leader.leading.wait())
    try:
        await asyncio.wait({asking, leading}, return_when=asyncio.FIRST_COMPLETED)
        if asking.done():
            return asking.result()
        return None
    finally:
        asking.cancel()
        leading.cancel()


async def _lead_or_find_leader(
    leader: Any, database: Database, settings: Settings, timeout_s: float
) -> str | None:
    """Wait until `leader` leads (None) or another process is seen leading (its identity).

    Raises Failure when neither happens within `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leader.leading.wait(), _LEAD_POLL_S)
            return None
        seen = await read_leadership(database, lock_key=settings.dispatcher_lock_key)
        if seen.leading and seen.identity != leader.identity:
            return seen.identity or "-"
        if loop.time() >= deadline:
            raise Failure(f"No dispatcher took the lead within {timeout_s:g} s.")


@contextlib.contextmanager
def _dispatcher_logs(settings: Settings) -> Iterator[None]:
    """The in-process dispatcher logs warnings and worse to stderr (stdout is the answer);
    structlog's configuration is restored afterwards."""
    from config.logs import configure

    saved = structlog.get_config()
    configure(level="warning", log_format=settings.log_format)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr), cache_logger_on_first_use=False
    )
    try:
        yield
    finally:
        structlog.configure(**saved)
