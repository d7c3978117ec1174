"""Operations: liveness, readiness and the Prometheus scrape, all without a token.

- `/healthz` answers while the process can answer at all; it touches nothing else, so a slow
  database never gets a live process restarted.
- `/readyz` answers 200 only when the database answers *and* this process leads the
  dispatcher, as the database itself confirms: the leadership row names this process's epoch
  and the session that claimed it still holds the advisory lock. Only the leader can serve
  fetches and sells, so a standby, a process still starting, and a leader whose lock is gone
  (it has not noticed yet, or is about to) all answer 503 with Retry-After. The body always
  says why and who leads.
- `/metrics` is the Prometheus text format from the app's own registry (web/metrics.py).

With `metrics_port` set these are served by a second listener (web/app.py) and not on the
main port; their handlers then run on that listener's app and read the main app's resources
through `MAIN_APP`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import pydantic
from aiohttp import web

from storage.database import Database
from storage.errors import StorageError
from web.keys import DATABASE, DISPATCHER, MAIN_APP, METRICS, SETTINGS
from web.routing import Operation, json_response

OPS_TAG = "ops"
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
METRICS_PATH = "/metrics"

# Well inside the 1 s a probe usually allows (Kubernetes' default timeoutSeconds).
DATABASE_TIMEOUT_S = 0.5
_NO_STORE = {"Cache-Control": "no-store"}

Role = Literal["starting", "standby", "leader", "stopped"]


class Liveness(pydantic.BaseModel):
    status: Literal["ok"] = "ok"


class Leader(pydantic.BaseModel):
    """Who leads, as the database says (or as this process says when the database is away)."""

    identity: str | None = pydantic.Field(
        description="host:pid:port of the leading process; null while a new leader takes over."
    )
    epoch: int | None = pydantic.Field(description="The fencing token of its leadership.")
    since: datetime | None = pydantic.Field(description="When it took leadership.")
    pid: int | None = pydantic.Field(
        description="The PostgreSQL backend holding the dispatcher's lock; null when unknown."
    )


NotReady = Literal["database_unavailable", "not_leader", "lock_lost", "blocked_by_lock"]


class Readiness(pydantic.BaseModel):
    ready: bool
    role: Role = pydantic.Field(description="This process's dispatcher role.")
    reason: NotReady | None = pydantic.Field(
        description="Why this process is not ready; null when it is."
    )
    leader: Leader | None = pydantic.Field(description="Null when no process holds the lock.")
    database: Literal["ok", "unavailable"]
    backlog: int | None = pydantic.Field(
        description="Unassigned tickets in this process's queue (at most the dispatcher's"
        " window); null unless it leads."
    )


@dataclass(frozen=True, slots=True)
class LeadershipRecord:
    """The leadership row and the sessions holding the lock, read from the database."""

    epoch: int
    holder: str | None
    holder_pid: int | None
    since: datetime | None
    lock_pids: frozenset[int]

    @property
    def holder_has_lock(self) -> bool:
        return self.holder_pid is not None and self.holder_pid in self.lock_pids


def assess(
    *,
    role: Role,
    identity: str | None,
    epoch: int | None,
    queue_length: int | None,
    record: LeadershipRecord | None,
    blocked: bool = False,
) -> Readiness:
    """Readiness from this process's view and the database's (`record`, None when it did not
    answer). Pure: no I/O, so every combination is a table row in the tests."""
    leading = role == "leader"
    backlog = queue_length if leading else None
    if record is None:
        leader = Leader(identity=identity, epoch=epoch, since=None, pid=None) if leading else None
        return Readiness(
            ready=False,
            role=role,
            reason="database_unavailable",
            leader=leader,
            database="unavailable",
            backlog=backlog,
        )
    if record.holder_has_lock:
        leader = Leader(
            identity=record.holder, epoch=record.epoch, since=record.since, pid=record.holder_pid
        )
    elif record.lock_pids:
        # Locked but not claimed yet: a new leader is between its lock and its epoch.
        leader = Leader(identity=None, epoch=None, since=None, pid=min(record.lock_pids))
    else:
        leader = None
    confirmed = leading and record.holder_has_lock and record.epoch == epoch
    reason: NotReady | None = None if confirmed else ("lock_lost" if leading else "not_leader")
    if confirmed and blocked:
        # Leading, but its memory cannot be loaded past another session's lock: every
        # fetch and sell is answered 503 until that session lets go.
        reason = "blocked_by_lock"
    return Readiness(
        ready=reason is None,
        role=role,
        reason=reason,
        leader=leader,
        database="ok",
        backlog=backlog,
    )


# Reads that outlived the timeout, finishing in the background (see read_leadership).
_abandoned_reads: set[asyncio.Future[Any]] = set()


async def read_leadership(database: Database, *, lock_key: int) -> LeadershipRecord | None:
    """The leadership record, or None when the database does not answer within the timeout.

    The read runs as a task of its own, left behind when it is late: cancelling a query is not
    enough, as asyncpg's pool returns the connection shielded from cancellation and waits for
    the server to acknowledge the cancel, which a frozen server never does (the probe hung
    for as long as the database did)."""
    read = asyncio.ensure_future(_read_leadership(database, lock_key))
    await asyncio.wait({read}, timeout=DATABASE_TIMEOUT_S)
    if not read.done():
        read.cancel()
        _abandoned_reads.add(read)
        read.add_done_callback(_forget_read)
        return None
    try:
        return read.result()
    except StorageError:
        return None


def _forget_read(read: asyncio.Future[Any]) -> None:
    _abandoned_reads.discard(read)
    if not read.cancelled():
        read.exception()


async def _read_leadership(database: Database, lock_key: int) -> LeadershipRecord | None:
    row = await database.fetchrow("dispatcher_leadership_get")
    holders = await database.fetch("dispatcher_lock_holder", lock_key)
    if row is None:  # the migration inserts the one row; only a hand-edited database lacks it
        return None
    return LeadershipRecord(
        epoch=row["epoch"],
        holder=row["holder"],
        holder_pid=row["holder_pid"],
        since=row["since"],
        lock_pids=frozenset(holder["pid"] for holder in holders),
    )


def _served(request: web.Request) -> web.Application:
    """The app whose health this is: the main app, also when the ops listener serves this."""
    return request.app.get(MAIN_APP, request.app)


async def healthz(request: web.Request) -> web.Response:
    response = json_response(Liveness())
    response.headers.update(_NO_STORE)
    return response


async def readyz(request: web.Request) -> web.Response:
    app = _served(request)
    settings = app[SETTINGS]
    dispatcher = app.get(DISPATCHER)
    database = app.get(DATABASE)
    record = None
    if database is not None:
        record = await read_leadership(database, lock_key=settings.dispatcher_lock_key)
    readiness = assess(
        role=cast(Role, dispatcher.role if dispatcher is not None else "starting"),
        identity=dispatcher.identity if dispatcher is not None else None,
        epoch=dispatcher.epoch if dispatcher is not None else None,
        queue_length=dispatcher.queue_length if dispatcher is not None else None,
        record=record,
        blocked=dispatcher is not None and dispatcher.blocked,
    )
    response = json_response(readiness, status=200 if readiness.ready else 503)
    response.headers.update(_NO_STORE)
    if not readiness.ready:
        response.headers["Retry-After"] = str(settings.dispatcher_retry_after_s)
    return response


async def metrics(request: web.Request) -> web.Response:
    exporter = _served(request)[METRICS]
    body, content_type = exporter.exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type, **_NO_STORE})


OPERATIONS = [
    Operation(
        "GET",
        HEALTHZ_PATH,
        healthz,
        summary="Liveness: the process answers",
        description="Always 200 while the process can answer; needs no database.",
        tag=OPS_TAG,
        auth=False,
        responses={200: Liveness},
    ),
    Operation(
        "GET",
        READYZ_PATH,
        readyz,
        summary="Readiness: the database answers and this process leads the dispatcher",
        description=(
            "200 only on the leader, as the database confirms it (its epoch, its lock); 503"
            " with Retry-After on a standby, while starting, when the database does not answer"
            f" within {DATABASE_TIMEOUT_S} s, or when this process lost its lock. The body is"
            " the same either way."
        ),
        tag=OPS_TAG,
        auth=False,
        responses={200: Readiness, 503: Readiness},
    ),
    Operation(
        "GET",
        METRICS_PATH,
        metrics,
        summary="Prometheus metrics (text exposition format)",
        description="OpenMetrics when the scraper asks for `application/openmetrics-text`.",
        tag=OPS_TAG,
        auth=False,
        responses={200: None},
    ),
]
