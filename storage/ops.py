"""LISTEN from outside the service: how the command line talks to the running leader.

The leader takes admin requests from a notification channel and answers on another one
(dispatcher/actor.py, "admin mailbox"). Notifications are not queued for absent listeners,
so a requester must be LISTENing on the answer channel *before* it sends its request, or a
quick answer is lost: `listening()` yields only once LISTEN has run.

A pooled connection will not do: a pool resets (UNLISTEN *) and shares its connections, so
this opens one connection of its own and closes it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from storage.errors import DatabaseUnavailable, translated
from storage.queries import QUERIES

# Put in the queue when the connection closes, so that a waiter learns it at once.
_LOST = object()


class Listener:
    """One connection LISTENing on one channel; it can also send notifications."""

    def __init__(self, connection: asyncpg.Connection, channel: str) -> None:
        self._connection = connection
        self.channel = channel
        self._received: asyncio.Queue[Any] = asyncio.Queue()

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self._received.put_nowait(payload)

    def _on_lost(self, _connection: Any) -> None:
        self._received.put_nowait(_LOST)

    async def notify(self, channel: str, payload: str) -> None:
        """Send `payload` on `channel` (committed at once: no transaction is open here)."""
        with translated():
            await self._connection.execute(QUERIES["admin_notify"], channel, payload)

    async def next(self, timeout_s: float) -> str | None:
        """The next payload received on the channel, or None when none came in `timeout_s`.

        Raises DatabaseUnavailable when the connection has been lost (anything sent to this
        channel since is lost too)."""
        try:
            payload = await asyncio.wait_for(self._received.get(), max(timeout_s, 0.0))
        except TimeoutError:
            return None
        if payload is _LOST:
            self._received.put_nowait(_LOST)  # and for every later call
            raise DatabaseUnavailable("database unavailable: the listening connection closed")
        return str(payload)


@contextlib.asynccontextmanager
async def listening(dsn: str, channel: str) -> AsyncIterator[Listener]:
    """A Listener whose LISTEN has already run; its connection is closed on exit.

    Raises DatabaseUnavailable when the server cannot be reached."""
    with translated(connecting=True):
        connection = await asyncpg.connect(dsn)
    try:
        listener = Listener(connection, channel)
        connection.add_termination_listener(listener._on_lost)
        with translated():
            await connection.add_listener(channel, listener._on_notification)
        yield listener
    finally:
        try:
            await asyncio.wait_for(connection.close(), 2)
        except Exception:
            connection.terminate()
