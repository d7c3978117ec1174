"""The connection pool, and the only way the rest of the service runs SQL.

Every method takes a query *name* from queries.sql, returns plain dicts, and raises only
`storage.errors` exceptions. `transaction()` yields an object with the same methods bound to
one connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from storage.errors import StorageError, translated
from storage.queries import QUERIES


class _Runner:
    """Runs named queries on something asyncpg can execute on (a pool or a connection)."""

    def __init__(self, target: asyncpg.Pool | asyncpg.Connection) -> None:
        self._target = target

    async def fetch(self, name: str, *args: Any) -> list[dict[str, Any]]:
        with translated():
            return [dict(row) for row in await self._target.fetch(QUERIES[name], *args)]

    async def fetchrow(self, name: str, *args: Any) -> dict[str, Any] | None:
        with translated():
            row = await self._target.fetchrow(QUERIES[name], *args)
        return None if row is None else dict(row)

    async def fetchval(self, name: str, *args: Any) -> Any:
        with translated():
            return await self._target.fetchval(QUERIES[name], *args)

    async def execute(self, name: str, *args: Any) -> str:
        with translated():
            return await self._target.execute(QUERIES[name], *args)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs on release beyond asyncpg's own rollback of an open
    transaction: nothing. Pool connections never LISTEN, take advisory locks or SET anything
    but the statement timeout above, which asyncpg's default reset (RESET ALL and more, one
    round trip per release) would drop after the connection's first use."""


class Transaction(_Runner):
    pass


class Database(_Runner):
    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        super().__init__(pool)
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 2, max_size: int = 20, statement_timeout_s: float = 30.0
    ) -> Database:
        """Open a pool; raises DatabaseUnavailable when the server cannot be reached."""
        timeout_ms = int(statement_timeout_s * 1000)

        async def init(connection: asyncpg.Connection) -> None:
            # A SET, not a startup parameter: poolers such as pgbouncer refuse unknown ones.
            await connection.execute(f"SET statement_timeout = {timeout_ms}")

        with translated():
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, init=init, reset=_keep_session
            )
        if pool is None:  # pragma: no cover - only when the loop is closing
            raise StorageError("the pool could not be created")
        return cls(pool, dsn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        with translated():
            async with self.pool.acquire() as connection, connection.transaction():
                yield Transaction(connection)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.close()
