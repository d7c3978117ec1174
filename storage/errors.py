"""The storage layer's own exceptions. Driver errors are translated once, in `translated()`.

Each exception's docstring is its default message; callers above `storage/` never see asyncpg.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg


class StorageError(Exception):
    """The database could not complete the operation."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class Conflict(StorageError):
    """The change conflicts with data that already exists."""

    def __init__(self, message: str | None = None, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class DatabaseUnavailable(StorageError):
    """The database cannot be reached right now; retrying later is safe."""


class Fenced(StorageError):
    """Another dispatcher has taken over (the epoch moved on): this one must stop deciding."""


class Diverged(StorageError):
    """A guarded write matched fewer rows than decided: memory and database disagree."""


class StatementTimedOut(DatabaseUnavailable):
    """The statement ran past its session's statement_timeout and was cancelled: nothing of
    it was written. For the dispatcher, usually lock waits adding up (see RowLocked)."""


class RowLocked(StorageError):
    """A row the write needed stayed locked by another session (lock_timeout): nothing was
    written; the same write succeeds once that session commits or rolls back."""


# Raised by dispatcher_guard() (migrations/0002_dispatch_guard.sql): keep in sync.
_GUARD_ERRORS: dict[str, type[StorageError]] = {"TSF01": Fenced, "TSD01": Diverged}


class DataDirUnusable(StorageError):
    """The data directory (DATA_DIR) cannot be created or used for the embedded PostgreSQL."""


class InvalidDatabaseUrl(StorageError):
    """DATABASE_URL is not a PostgreSQL URL this service can connect with."""


class InvalidValue(StorageError):
    """The database refused a value (out of range or malformed)."""


_UNAVAILABLE = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
    ConnectionError,
    OSError,
    TimeoutError,
)


# A server that answers but refuses the connection: a DATABASE_URL naming a database or role
# that does not exist, or a wrong password. For the caller, the database is not there.
_REFUSED_AT_LOGIN = (
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidPasswordError,
)


@contextlib.contextmanager
def translated(*, connecting: bool = False) -> Iterator[None]:
    """Re-raise driver errors as StorageError subclasses; anything else passes through.

    `connecting`: around opening a connection, where every error the server answers with is
    a refusal of the login, caused by DATABASE_URL (a startup parameter it does not know,
    such as `?foo=bar`, as much as a wrong password). Never around queries: there such an
    error is a bug, not an unavailable database."""
    try:
        yield
    except (
        asyncpg.exceptions.UniqueViolationError,
        asyncpg.exceptions.ForeignKeyViolationError,
        asyncpg.exceptions.RestrictViolationError,
    ) as exc:
        raise Conflict(exc.detail or str(exc), constraint=exc.constraint_name) from exc
    except asyncpg.exceptions.CheckViolationError as exc:
        raise InvalidValue(exc.detail or str(exc)) from exc
    except (
        asyncpg.exceptions.NumericValueOutOfRangeError,
        asyncpg.exceptions.StringDataRightTruncationError,
        asyncpg.exceptions.InvalidTextRepresentationError,
        asyncpg.exceptions.CharacterNotInRepertoireError,
        asyncpg.exceptions.UntranslatableCharacterError,
        asyncpg.exceptions.InvalidParameterValueError,
    ) as exc:
        raise InvalidValue(str(exc)) from exc
    except asyncpg.exceptions.LockNotAvailableError as exc:
        raise RowLocked(f"{exc} ({exc.context})" if exc.context else str(exc)) from exc
    except asyncpg.exceptions.QueryCanceledError as exc:
        # The same SQLSTATE covers a cancel request (a shutdown, an operator); only the
        # message tells the timeout apart.
        if "statement timeout" in str(exc):
            raise StatementTimedOut(str(exc)) from exc
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    except asyncpg.exceptions.ClientConfigurationError as exc:
        # Before _UNAVAILABLE (it is an InterfaceError): a value in DATABASE_URL the driver
        # cannot use, e.g. ?sslmode=bogus. Its own words say which.
        raise InvalidDatabaseUrl(f"DATABASE_URL: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc
    except asyncpg.exceptions.PostgresError as exc:
        guard = _GUARD_ERRORS.get(exc.sqlstate or "")
        if guard is not None:
            raise guard(str(exc)) from exc
        if isinstance(exc, asyncpg.exceptions.PostgresConnectionError):
            raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        if connecting or isinstance(exc, _REFUSED_AT_LOGIN):
            # The server's own words name what is wrong: the database, the role, the password.
            raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
        raise
