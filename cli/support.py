"""What every `tickets` command shares: exit codes, errors, settings and the database.

Exit codes (keep in sync with `tickets --help`): 0 done; 1 the input was refused (a usage
error, a bad value, a duplicate, bad rows); 2 the command could not run (the database is
unreachable, the configuration from the environment is unusable, or something unexpected
failed). Messages go to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import traceback
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from config.settings import Settings

if TYPE_CHECKING:
    from storage.database import Database

T = TypeVar("T")

EXIT_INVALID = 1
EXIT_FAILURE = 2


class Invalid(click.ClickException):
    """The input was refused; running again with the same input fails the same way."""

    exit_code = EXIT_INVALID


class Failure(click.ClickException):
    """The command could not run; retrying later may succeed."""

    exit_code = EXIT_FAILURE


class TicketsGroup(click.Group):
    """A click group whose usage errors exit with 1 (click's default is 2, which we keep
    for "could not run")."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            exc.exit_code = EXIT_INVALID  # type: ignore[misc]
            raise

    def invoke(self, ctx: click.Context) -> Any:
        # Subcommands parse their arguments in here.
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_INVALID  # type: ignore[misc]
            raise


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with the options given on the command line on top.

    Raises Failure (exit 2: nothing can run on this configuration) naming each variable
    that is refused and its rule, on one line."""
    values = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise Failure(f"invalid settings: {settings_problems(exc)}") from exc


def settings_problems(exc: ValidationError) -> str:
    """'PORT: …; LOG_LEVEL: …': the variables as the environment names them. The values are
    left out: DATABASE_URL may carry a password."""
    problems = []
    for error in exc.errors():
        # pydantic's "Input should be …" reads as the rule once the variable is named; a
        # validator's own ValueError comes as "Value error, <its message>".
        message = error["msg"].removeprefix("Value error, ")
        message = message.replace("Input should be", "must be", 1)
        variable = "_".join(str(part) for part in error["loc"][:1]).upper()
        problems.append(f"{variable}: {message}" if variable else message)
    return "; ".join(problems)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning storage failures into exit code 2.

    click's own exceptions pass through (Invalid, Failure, Abort at the end of input); an
    unexpected exception is a bug:
    its traceback is printed and the exit code is 2.
    """
    from storage.errors import DatabaseUnavailable, StorageError

    try:
        return asyncio.run(coroutine)
    except (click.ClickException, click.Abort, click.exceptions.Exit):
        raise
    except DatabaseUnavailable as exc:
        if os.environ.get("DATABASE_URL", "").strip():
            hint = "check DATABASE_URL, or unset it to use the embedded one"
        else:
            hint = "the embedded PostgreSQL under DATA_DIR; run it again"
        raise Failure(f"{exc} ({hint})") from exc
    except StorageError as exc:
        raise Failure(str(exc)) from exc
    except Exception as exc:
        traceback.print_exc()
        raise Failure(f"unexpected {type(exc).__name__}: {exc}") from exc


async def database_url(settings: Settings) -> str:
    """DATABASE_URL (or the embedded server's), migrated: commands work on a fresh ./.data/."""
    from storage.migrate import migrate
    from web.app import resolve_database_url

    dsn = await resolve_database_url(settings)
    await migrate(dsn)
    return dsn


def require_existing_data(settings: Settings) -> None:
    """For commands that only look at (or act on) what is there: on the embedded default, a
    DATA_DIR where nothing ever ran is refused instead of initialised, so a mistyped one
    does not answer with a believable empty system."""
    if settings.database_url:  # set and not blank (blank is unset, as everywhere)
        return
    try:
        (settings.data_dir / "postgres" / "PG_VERSION").stat()
    except NotADirectoryError:
        return  # an unusable DATA_DIR: opening it says so, naming the cause
    except FileNotFoundError:
        raise Failure(
            f"No database under DATA_DIR={settings.data_dir}: nothing has run there yet"
            " (start the service with `tickets serve`, or set DATABASE_URL)."
        ) from None


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, existing: bool = False) -> AsyncIterator[Database]:
    """A small pool on the migrated database; `existing`: see `require_existing_data`."""
    from storage.database import Database

    if existing:
        require_existing_data(settings)
    database = await Database.connect(
        await database_url(settings),
        min_size=1,
        max_size=2,
        statement_timeout_s=settings.db_statement_timeout_s,
    )
    try:
        yield database
    finally:
        await database.close()
