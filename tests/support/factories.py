"""Test data written straight to the database, so tests arrange quickly and assert on SQL.

Passwords are hashed once per session with the service's real argon2id parameters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import asyncpg
from argon2 import PasswordHasher

from web.auth import key_digest, new_key

PASSWORD = "correct horse battery staple"


@functools.cache
def password_hash() -> str:
    return PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PASSWORD)


@dataclass
class Actor:
    """A user with a token, and its agent when it has one."""

    user_id: int
    username: str
    token: str
    agent_id: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


class Factory:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self.db = connection
        self._serial = 0

    def _name(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    async def user(
        self, *, username: str | None = None, is_staff: bool = False, is_active: bool = True
    ) -> Actor:
        username = username or self._name("user")
        user_id = await self.db.fetchval(
            "INSERT INTO users (username, email, password_hash, is_staff, is_active)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            username,
            f"{username}@example.com",
            password_hash(),
            is_staff,
            is_active,
        )
        token = new_key()
        await self.db.execute(
            "INSERT INTO api_tokens (user_id, key_sha256) VALUES ($1, $2)",
            user_id,
            key_digest(token),
        )
        return Actor(user_id=user_id, username=username, token=token)

    async def admin(self, **kwargs: Any) -> Actor:
        return await self.user(
            is_staff=True, username=kwargs.pop("username", None) or self._name("admin"), **kwargs
        )

    async def agent(self, *, capacity: int = 15, is_active: bool = True, **kwargs: Any) -> Actor:
        actor = await self.user(
            username=kwargs.pop("username", None) or self._name("agent"), **kwargs
        )
        actor.agent_id = await self.db.fetchval(
            "INSERT INTO agents (user_id, capacity, is_active) VALUES ($1, $2, $3) RETURNING id",
            actor.user_id,
            capacity,
            is_active,
        )
        return actor

    async def tickets(self, count: int, *, prefix: str = "ticket") -> list[int]:
        rows = await self.db.fetch(
            "INSERT INTO tickets (title, description)"
            " SELECT $1 || n, 'about ' || n FROM generate_series(1, $2) AS n RETURNING id",
            prefix,
            count,
        )
        return sorted(row["id"] for row in rows)

    async def ticket(self, *, title: str = "a ticket") -> int:
        return int(
            await self.db.fetchval("INSERT INTO tickets (title) VALUES ($1) RETURNING id", title)
        )
