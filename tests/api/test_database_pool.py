"""The pool keeps each connection's session settings for its whole life, and still hands
out every connection clean of a transaction its last user left open."""

from __future__ import annotations

import asyncpg
import pytest

from storage.database import Database


async def test_every_use_of_a_pooled_connection_has_the_statement_timeout(database_url):
    # One connection, so each use below is the same one, released and acquired again.
    db = await Database.connect(database_url, min_size=1, max_size=1, statement_timeout_s=0.2)
    try:
        for _ in range(3):
            assert await db.pool.fetchval("SHOW statement_timeout") == "200ms"
        with pytest.raises(asyncpg.exceptions.QueryCanceledError):
            await db.pool.execute("SELECT pg_sleep(2)")
        assert await db.pool.fetchval("SHOW statement_timeout") == "200ms"
    finally:
        await db.pool.close()


async def test_a_transaction_left_open_is_rolled_back_before_the_next_use(database_url):
    db = await Database.connect(database_url, min_size=1, max_size=1)
    try:
        async with db.pool.acquire() as connection:
            await connection.execute("BEGIN")
            await connection.execute("CREATE TABLE pool_probe (n int)")
        async with db.pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT to_regclass('pool_probe')") is None
    finally:
        await db.pool.close()
