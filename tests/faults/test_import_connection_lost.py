"""A bulk import whose COPY is cut off fails at once, and imports nothing.

asyncpg's COPY waits for its socket to take more data; when the connection was lost while
the socket was full, that wait never ended, so `tickets import-tickets` hung for ever
across an ordinary database restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from storage.errors import DatabaseUnavailable
from storage.imports import ticket_import

# Far above the moment the loss is noticed; reached only when the import hangs.
GIVE_UP_S = 15.0
COPYING = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY%' AND pid <> pg_backend_pid()"


def rows(started: asyncio.Event, count: int) -> Iterator[tuple[str, str]]:
    """Rows large enough to fill the socket fast."""
    description = "d" * 2000
    for n in range(count):
        if n == 1000:
            started.set()
        yield (f"ticket {n}", description)


async def cut_off_mid_copy(
    database_url: str, db: asyncpg.Connection, cut: str, *, count: int = 10_000_000
) -> BaseException:
    """Start an import of `count` rows (by default more than it can copy before the test
    gives up), cut it off with `cut` (SQL taking the COPY's pid), and return what the import
    raised; fails when it is still running GIVE_UP_S later."""
    started = asyncio.Event()

    async def import_everything() -> int:
        async with ticket_import(database_url) as target:
            return await target.copy(rows(started, count))

    importing = asyncio.create_task(import_everything())
    try:
        await asyncio.wait_for(started.wait(), GIVE_UP_S)
        await asyncio.sleep(0.3)  # well into the COPY, the socket full
        pid = await db.fetchval(COPYING)
        assert pid is not None
        await db.execute(cut, pid)
        # asyncio.wait: a timeout here must not cancel the import, which would end it.
        done, _ = await asyncio.wait({importing}, timeout=GIVE_UP_S)
        assert importing in done, f"the import still runs {GIVE_UP_S} s after it was cut off"
        error = importing.exception()
        assert error is not None
        return error
    finally:
        importing.cancel()


@pytest.mark.parametrize("repeat", range(3))
async def test_a_terminated_import_fails_instead_of_hanging(database_url, db, repeat):
    error = await cut_off_mid_copy(database_url, db, "SELECT pg_terminate_backend($1)")
    assert isinstance(error, DatabaseUnavailable), repr(error)
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0


async def test_a_cancelled_import_fails_and_imports_nothing(database_url, db):
    """The server ends the COPY but keeps the connection (pg_cancel_backend). asyncpg learns
    of it only once it has sent every row (the server discards them), so this import is
    finite: the rest of a file is read, never imported."""
    error = await cut_off_mid_copy(database_url, db, "SELECT pg_cancel_backend($1)", count=300_000)
    assert isinstance(error, DatabaseUnavailable), repr(error)
    assert isinstance(error.__cause__, asyncpg.QueryCanceledError), repr(error.__cause__)
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0
