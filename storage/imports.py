"""Bulk ticket import: rows streamed into one COPY, on one connection, in one transaction.

`ticket_import(dsn)` opens a dedicated connection (no statement timeout: a large COPY may
legitimately run for minutes) and a transaction; the block commits when it ends normally
and rolls back when it raises, so a file is imported whole or not at all. COPY assigns ids
from the identity column in the order rows arrive, so ids ascend in file order. The
tickets table's statement-level trigger sends one `tickets_inserted` notification per
COPY, delivered at commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable

import asyncpg

from storage.errors import DatabaseUnavailable, translated

# Keep in sync with the tickets table (storage/migrations/0001_initial.sql).
_TABLE = "tickets"
_COLUMNS = ("title", "description")


class TicketImport:
    """The open import: call `copy` once per stream of rows, inside `ticket_import`."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def copy(
        self, records: Iterable[tuple[str, str]] | AsyncIterable[tuple[str, str]]
    ) -> int:
        """COPY ``(title, description)`` rows, consumed lazily; returns how many were copied.

        An exception raised by `records` aborts the COPY and propagates unchanged. Rows the
        database refuses raise InvalidValue (the whole COPY fails, nothing from it stays).
        """
        copying = asyncio.ensure_future(
            self._connection.copy_records_to_table(_TABLE, records=records, columns=_COLUMNS)
        )
        lost = False

        # asyncpg's COPY waits for the socket to take more data, and a connection lost while
        # the socket is full never ends that wait (a database restart hung the import for
        # ever): the loss has to end it from outside.
        def connection_lost(_connection: object) -> None:
            nonlocal lost
            lost = True
            copying.cancel()

        self._connection.add_termination_listener(connection_lost)
        try:
            with translated():
                status = await copying
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if lost and not (current and current.cancelling()):
                raise DatabaseUnavailable("database unavailable: the connection was lost") from None
            raise
        finally:
            self._connection.remove_termination_listener(connection_lost)
        # The status is "COPY <count>".
        return int(status.rsplit(" ", 1)[-1])


@contextlib.asynccontextmanager
async def ticket_import(dsn: str) -> AsyncIterator[TicketImport]:
    """Yield a TicketImport; commit on normal exit, roll back when the block raises.

    Raises DatabaseUnavailable when the server cannot be reached. Retrying after a failure
    is safe: a rolled-back import leaves no rows (only gaps in the id sequence).
    """
    with translated(connecting=True):
        connection = await asyncpg.connect(dsn)
    try:
        with translated():
            await connection.execute("SET statement_timeout = 0")  # a long COPY is expected
            async with connection.transaction():
                yield TicketImport(connection)
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
