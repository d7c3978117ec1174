"""Versioned migrations: each file in migrations/ is applied once, in its own transaction.

Several processes may start at once (a leader and standbys); a transaction-level advisory
lock makes them take turns, so each migration runs exactly once.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from storage.errors import translated

_FOLDER = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_KEY = 7_302_210

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def available() -> list[tuple[str, str]]:
    """(version, sql) of every migration shipped with the package, in order."""
    return [(path.stem, path.read_text()) for path in sorted(_FOLDER.glob("*.sql"))]


async def migrate(dsn: str) -> list[str]:
    """Apply what is missing; returns the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    with translated(connecting=True):
        connection = await asyncpg.connect(dsn)
    with translated():
        try:
            for version, sql in available():
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY
                    )
                    await connection.execute(_CREATE_TABLE)
                    done = await connection.fetchval(
                        "SELECT true FROM schema_migrations WHERE version = $1", version
                    )
                    if done:
                        continue
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                    applied_now.append(version)
        finally:
            await connection.close()
    return applied_now
