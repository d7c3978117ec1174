"""`tickets`: the service's one command line (serve, migrate, admin tasks)."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from cli.dispatch import dispatcher, release
from cli.importer import import_tickets
from cli.ops import stats
from cli.support import TicketsGroup, load_settings
from cli.users import create_agent, createsuperuser
from config.logs import configure as configure_logging

if TYPE_CHECKING:
    from aiohttp import web

    from config.settings import Settings

__all__ = ["load_settings", "main"]


@click.group(cls=TicketsGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ticket-system: hands support tickets to agents, oldest first, never twice.

    Configuration comes from the environment (DATABASE_URL, HOST, PORT, ...); with no
    DATABASE_URL an embedded PostgreSQL under ./.data/ is used.

    Exit codes: 0 done, 1 invalid input (usage, values, bad rows), 2 the database is
    unreachable, the configuration is unusable, or the command failed.
    """


main.add_command(createsuperuser)
main.add_command(create_agent)
main.add_command(import_tickets)
main.add_command(stats)
main.add_command(release)
main.add_command(dispatcher)


@main.command()
@click.option("--host", default=None, help="Interface to bind (default: $HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: $PORT or 8000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP service (migrating the database first)."""
    from cli.runtime import new_event_loop, tune_garbage_collector
    from storage.errors import StorageError
    from storage.leadership import NotSafeForLeadership
    from web.app import CannotListen, create_app

    settings = load_settings(host=host, port=port)
    configure_logging(level=settings.log_level, log_format=settings.log_format)
    tune_garbage_collector()
    try:
        _run(settings, create_app(settings), new_event_loop())
    except (NotSafeForLeadership, StorageError, CannotListen) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        # Binding the main listener (the app and its database are closed again by then): a
        # port in use, an address this host does not have. Every other OSError of start-up
        # is translated before it gets here (the metrics listener's, the data directory's),
        # so this one is about PORT.
        click.echo(f"Error: cannot listen on {settings.host}:{settings.port}: {exc}", err=True)
        sys.exit(2)


def _run(settings: Settings, app: web.Application, loop: asyncio.AbstractEventLoop) -> None:
    from aiohttp import web

    banner = (
        f"ticket-system on http://{settings.host}:{settings.port}/ "
        f"(API docs at /api/docs/). First run? Create an admin: tickets createsuperuser"
    )
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        # aiohttp calls this once every listener is bound, so a start that fails never
        # claims to be serving; its own wording is replaced by ours.
        print=lambda _aiohttp_banner: click.echo(banner, err=True),
        access_log=None,
        shutdown_timeout=10,
        loop=loop,
    )


@main.command()
def migrate() -> None:
    """Apply pending database migrations and exit."""
    from storage.errors import StorageError
    from storage.migrate import migrate as apply_migrations
    from web.app import resolve_database_url

    settings = load_settings()

    async def run() -> list[str]:
        return await apply_migrations(await resolve_database_url(settings))

    try:
        applied = asyncio.run(run())
    except StorageError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"applied: {', '.join(applied)}" if applied else "the database is up to date")


if __name__ == "__main__":
    main()
