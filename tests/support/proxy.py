"""A TCP proxy between a test's code and PostgreSQL, to cut or freeze connections on demand.

It listens on 127.0.0.1 (a free port) and forwards every connection to the database's host
and port. Three faults, each affecting every connection, open or opened later:

* `cut()` closes both sides of every open connection at once, as a dead network or a killed
  peer would; new connections are accepted and forwarded again right after.
* `stall()` stops forwarding and keeps every socket open: nothing flows either way and
  nothing is closed, as in a network partition. Connections opened during a stall are
  accepted and stall too. A side that closes during a stall is only noticed after `resume()`
  (the partition heals, the other side learns of the close).
* `cut_at(marker)` arms a one-shot cut of the first connection whose client sends a chunk
  containing `marker` (e.g. b"COMMIT"), either before or after forwarding that chunk: the
  server never sees it, or sees it and the client never hears back.

Counters: `connections` (accepted since start) and `open_connections`.

Use it as `async with Proxy(host, port) as proxy:` and point a DSN at it with `proxy.dsn()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from yarl import URL

_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


@dataclass
class _Trap:
    marker: bytes
    deliver: bool
    # Only the connection whose proxy-to-server socket has this local port (what
    # pg_stat_activity.client_port shows for its backend); None: any connection.
    server_port: int | None = None
    sprung: asyncio.Event = field(default_factory=asyncio.Event)

    def springs(self, link: _Link, data: bytes) -> bool:
        port = link.server.get_extra_info("sockname")[1]
        if self.server_port is not None and port != self.server_port:
            return False
        return self.marker in data


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._trap: _Trap | None = None
        self._server: asyncio.Server | None = None
        self._accepting: set[asyncio.Task[None]] = set()
        self._closing = False

    @classmethod
    def to(cls, dsn: str) -> Proxy:
        """A proxy in front of the server a DSN names (not started yet)."""
        url = URL(dsn)
        return cls(url.host or "127.0.0.1", url.port or 5432)

    def dsn(self, dsn: str) -> str:
        """`dsn` with its host and port replaced by the proxy's."""
        return str(URL(dsn).with_host(self.host).with_port(self.port))

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        # A connection accepted just before this runs gets its _accept task scheduled but not
        # yet started, so not in _accepting: the flag stops it when it starts, or else it
        # would link a pair of streams nothing ever closes (found garbage in the next test).
        self._closing = True
        if self._server is not None:
            self._server.close()
        self.resume()
        await self.cut()
        for task in list(self._accepting):
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ faults

    async def cut(self) -> int:
        """Close both sides of every open connection; returns how many were cut."""
        links = list(self._links)
        for link in links:
            await self._drop(link)
        return len(links)

    def stall(self) -> None:
        """Stop forwarding in both directions; every socket stays open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again whatever was held back, and any close that happened meanwhile."""
        self._flowing.set()

    def cut_at(
        self, marker: bytes, *, deliver: bool, server_port: int | None = None
    ) -> asyncio.Event:
        """Arm a one-shot cut of the first connection whose client sends `marker` (b"": the
        next chunk it sends at all), optionally only the one to the backend that sees
        `server_port` as its client port.

        With `deliver` the chunk holding the marker reaches the server before the cut;
        otherwise it is dropped. Returns an event set once the trap has sprung.
        """
        self._trap = _Trap(marker, deliver, server_port)
        return self._trap.sprung

    def disarm(self) -> None:
        self._trap = None

    # ------------------------------------------------------------ forwarding

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter):
        if self._closing:
            client.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._accepting.add(task)
        linked = False
        try:
            await self._flowing.wait()
            try:
                server_reader, server = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                client.transport.abort()
                return
            if self._closing:
                server.transport.abort()
                return  # the client is aborted below: no link owns it
            self.connections += 1
            link = _Link(self.connections, client, server)
            self._links.add(link)
            linked = True
            link.pumps = [
                asyncio.create_task(self._pump(link, client_reader, server, upstream=True)),
                asyncio.create_task(self._pump(link, server_reader, client, upstream=False)),
            ]
            # Either side closing (or a trap) ends the link: close both sides.
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
            await self._drop(link)
        finally:
            self._accepting.discard(task)
            if not linked:
                # Cancelled (close()) before a link owned it: waiting for the flow or in
                # the middle of connecting upstream. Nothing else will ever close it.
                client.transport.abort()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        tail = b""
        try:
            while True:
                await self._flowing.wait()
                chunk = await reader.read(_CHUNK)
                await self._flowing.wait()  # a chunk read just before a stall waits too
                if not chunk:
                    return  # EOF: the caller closes both sides
                trap = self._trap
                if upstream and trap is not None and trap.springs(link, tail + chunk):
                    self._trap = None
                    if trap.deliver:
                        writer.write(chunk)
                        await writer.drain()
                    trap.sprung.set()
                    link.close()
                    return
                tail = chunk[-64:]
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    async def _drop(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        link.close()
        current = asyncio.current_task()
        for pump in link.pumps:
            if pump is not current and not pump.done():
                pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                *(p for p in link.pumps if p is not current), return_exceptions=True
            )
