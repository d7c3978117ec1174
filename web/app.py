"""`create_app(settings)`: the one factory used by `tickets serve` and by the tests.

Resources are opened and closed in `cleanup_ctx` generators, in order: the database (started
embedded when no DATABASE_URL is given, then migrated), then what depends on it.

With `metrics_port` set, /healthz, /readyz and /metrics move to a listener of their own on that
port, started first and stopped last: liveness answers while migrations run, and readiness
reports a shutdown until the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from config.settings import Settings
from dispatcher.actor import Dispatcher, DispatcherOptions
from storage import embedded
from storage.database import Database
from storage.dsn import check_database_url
from storage.leadership import check_database
from storage.migrate import migrate
from web.auth import Authenticator
from web.errors import error_middleware
from web.handlers.health import OPS_TAG
from web.keys import (
    AUTHENTICATOR,
    DATABASE,
    DISPATCHER,
    LOGIN_THROTTLE,
    MAIN_APP,
    METRICS,
    OPS_RUNNER,
    PASSWORDS,
    SETTINGS,
)
from web.metrics import Metrics
from web.middleware import request_context_middleware
from web.passwords import PasswordHasher
from web.ratelimit import LoginThrottle
from web.routes import OPERATIONS
from web.routing import add_operations


class CannotListen(Exception):
    """A listener other than the main one could not bind (a port in use, an address this
    host does not have); says which, since `tickets serve` otherwise names the main port."""

    def __init__(self, host: str, port: int, reason: OSError) -> None:
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


async def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL, checked (InvalidDatabaseUrl says what is wrong with it), or the embedded
    server's (started here when needed)."""
    if settings.database_url:
        await check_database_url(settings.database_url)
        return settings.database_url
    return await asyncio.to_thread(embedded.start, settings.data_dir)


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dsn = await resolve_database_url(settings)
    # First, so that an unfit connection (a transaction pooler, commits that are not
    # durable) is refused with its reason rather than failing somewhere in the migrations.
    await check_database(dsn)
    await migrate(dsn)
    database = await Database.connect(
        dsn,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        statement_timeout_s=settings.db_statement_timeout_s,
    )
    app[DATABASE] = database
    yield
    await database.close()


async def _security(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    passwords = await asyncio.to_thread(
        PasswordHasher,
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        concurrency=settings.password_hash_concurrency,
    )
    app[PASSWORDS] = passwords
    app[LOGIN_THROTTLE] = LoginThrottle(
        failures_allowed=settings.login_failures_allowed,
        failures_allowed_per_address=settings.login_failures_allowed_per_address,
        window_s=settings.login_failure_window_s,
    )
    authenticator = Authenticator(app[DATABASE], cache_ttl_s=settings.auth_cache_ttl_s)
    app[AUTHENTICATOR] = authenticator
    await authenticator.start()
    yield
    await authenticator.close()
    passwords.close()


def dispatcher_options(settings: Settings) -> DispatcherOptions:
    return DispatcherOptions(
        window_size=settings.dispatcher_window_size,
        max_batch=settings.dispatcher_max_batch,
        rescan_interval_s=settings.dispatcher_rescan_interval_s,
        heartbeat_interval_s=settings.dispatcher_heartbeat_interval_s,
        row_lock_wait_s=settings.dispatcher_row_lock_wait_s,
        retry_after_s=settings.dispatcher_retry_after_s,
        lock_key=settings.dispatcher_lock_key,
    )


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    identity = f"{socket.gethostname()}:{os.getpid()}:{settings.port}"
    dispatcher = Dispatcher(
        app[DATABASE].dsn, identity=identity, options=dispatcher_options(settings)
    )
    app[METRICS].watch(dispatcher.stats)
    await dispatcher.start()
    app[DISPATCHER] = dispatcher
    yield
    await dispatcher.stop()


async def _ops_listener(app: web.Application) -> AsyncIterator[None]:
    """Serve the operations routes on `metrics_port` (same host) with their own runner."""
    settings = app[SETTINGS]
    ops = web.Application(middlewares=_middlewares(app[METRICS]))
    ops[MAIN_APP] = app
    add_operations(ops, [operation for operation in OPERATIONS if operation.tag == OPS_TAG])
    runner = web.AppRunner(ops, access_log=None)
    await runner.setup()
    assert settings.metrics_port is not None  # only added when it is set
    try:
        await web.TCPSite(runner, settings.host, settings.metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise CannotListen(settings.host, settings.metrics_port, exc) from exc
    except BaseException:
        await runner.cleanup()
        raise
    app[OPS_RUNNER] = runner
    yield
    await runner.cleanup()


def _middlewares(metrics: Metrics) -> list[Middleware]:
    # Metrics outside error_middleware: it counts rendered errors with their final status.
    return [request_context_middleware, metrics.middleware(), error_middleware]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    metrics = Metrics(dispatcher=lambda: app.get(DISPATCHER))
    app.middlewares.extend(_middlewares(metrics))
    app[SETTINGS] = settings
    app[METRICS] = metrics
    separate_ops = settings.metrics_port is not None
    if separate_ops:
        app.cleanup_ctx.append(_ops_listener)
    app.cleanup_ctx.extend([_database, _security, _dispatcher])
    add_operations(app, [op for op in OPERATIONS if not (separate_ops and op.tag == OPS_TAG)])
    return app
