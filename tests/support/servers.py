"""`tickets serve` processes for fault tests: start, probe, signal, read their logs, clean up.

Each server is a real subprocess (`python -m cli.main serve --port N`) on 127.0.0.1 with its
own free port, DATABASE_URL from the test, LOG_LEVEL=info and JSON logs captured to a file.
Its dispatcher identity is `host:pid:port` (web/app.py), so `Server.owns(holder)` tells which
process `dispatcher_leadership.holder` names.

Readiness is observable, never assumed: a server is ready when a fetch for a test agent
answers 200 (it leads) or 503 with the standby message (it waits for the lock). Every wait is
bounded. Signals go to one PID at a time. `Servers.close()` (called by the fixture finalizer)
stops everything it started, frozen processes included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from dispatcher.errors import NotLeader
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
FETCH = "/api/tickets/fetch_tickets/"
SELL = "/api/tickets/sell_tickets/"
# What a standby answers (the 503's detail); keep in sync with dispatcher/errors.py.
STANDBY_DETAIL = NotLeader.__doc__ or "standby"


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    body: Any

    @property
    def is_standby(self) -> bool:
        return (
            self.status == 503
            and isinstance(self.body, dict)
            and "standby" in str(self.body.get("detail", ""))
        )


class Server:
    def __init__(self, name: str, port: int, process: subprocess.Popen[bytes], folder: Path):
        self.name = name
        self.port = port
        self.process = process
        self.log_path = folder / f"{name}.jsonl"
        self.stderr_path = folder / f"{name}.stderr"

    def __repr__(self) -> str:
        return f"<Server {self.name} pid={self.pid} port={self.port}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def owns(self, holder: str | None) -> bool:
        """Is `holder` (dispatcher_leadership.holder) this process's identity?"""
        return holder is not None and holder.endswith(f":{self.pid}:{self.port}")

    def running(self) -> bool:
        return self.process.poll() is None

    # ------------------------------------------------------------ signals, by PID only

    def send(self, signum: signal.Signals) -> None:
        if self.running():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send(signal.SIGKILL)

    def freeze(self) -> None:
        self.send(signal.SIGSTOP)

    def thaw(self) -> None:
        self.send(signal.SIGCONT)

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float = 10.0) -> int:
        """Reap the process; raises TimeoutError when it is still running after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self} still running after {timeout_s} s")
            await asyncio.sleep(0.01)
        return code

    # ------------------------------------------------------------ logs

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (a line cut short by a kill is skipped)."""
        if not self.log_path.exists():
            return []
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                if isinstance(entry, dict):
                    lines.append(entry)
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def stderr_tail(self, chars: int = 3000) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")[-chars:]

    # ------------------------------------------------------------ HTTP

    async def post(
        self,
        session: aiohttp.ClientSession,
        path: str,
        headers: Mapping[str, str],
        payload: Any = None,
        *,
        timeout_s: float = 2.0,
    ) -> Answer:
        try:
            async with session.post(
                self.url + path,
                json=payload,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = await response.text()
                return Answer(response.status, body)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return Answer(0, None)

    async def fetch(
        self, session: aiohttp.ClientSession, headers: Mapping[str, str], *, timeout_s: float = 2.0
    ) -> Answer:
        return await self.post(session, FETCH, headers, timeout_s=timeout_s)

    async def wait_ready(
        self,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        *,
        timeout_s: float = 30.0,
        want: str = "any",
    ) -> Answer:
        """Poll a fetch until it answers 200 (leader) or 503 standby; `want` narrows it to
        'leader' or 'standby'. Raises TimeoutError, or RuntimeError when the process exits."""
        deadline = time.monotonic() + timeout_s
        last = Answer(0, None)
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"{self} exited with {self.process.returncode}:\n{self.stderr_tail()}"
                )
            last = await self.fetch(session, headers, timeout_s=1.0)
            if last.status == 200 and want in ("any", "leader"):
                return last
            if last.is_standby and want in ("any", "standby"):
                return last
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{self} not ready ({want}) after {timeout_s} s; last answer {last}")


class Servers:
    """Starts `tickets serve` processes on one database and stops them all on close()."""

    def __init__(self, database_url: str, folder: Path, **env: str) -> None:
        self.database_url = database_url
        self.folder = folder
        self.env = env
        self.started: list[Server] = []

    def spawn(self, count: int = 1, **env: str) -> list[Server]:
        """Start `count` processes back to back (as close to the same moment as possible)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        prepared: list[tuple[str, int, dict[str, str]]] = []
        for _ in range(count):
            name = f"s{len(self.started) + len(prepared) + 1}"
            port = free_port()
            environment = {
                **os.environ,
                "DATABASE_URL": self.database_url,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "LOG_LEVEL": "info",
                "LOG_FORMAT": "json",
                "DB_POOL_MIN_SIZE": "1",
                "DB_POOL_MAX_SIZE": "10",
                "PYTHONUNBUFFERED": "1",
                **self.env,
                **env,
            }
            environment.pop("METRICS_PORT", None)  # one fixed port would clash between servers
            prepared.append((name, port, environment))
        spawned = []
        for name, port, environment in prepared:
            stdout = (self.folder / f"{name}.jsonl").open("wb")
            stderr = (self.folder / f"{name}.stderr").open("wb")
            try:
                process = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                    cwd=ROOT,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                )
            finally:
                stdout.close()
                stderr.close()
            server = Server(name, port, process, self.folder)
            self.started.append(server)
            spawned.append(server)
        return spawned

    async def start(
        self,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        *,
        count: int = 1,
        want: str = "any",
        timeout_s: float = 30.0,
    ) -> list[Server]:
        """Spawn and wait until each is ready (see Server.wait_ready)."""
        servers = self.spawn(count)
        await asyncio.gather(
            *(s.wait_ready(session, headers, want=want, timeout_s=timeout_s) for s in servers)
        )
        return servers

    def close(self, *, grace_s: float | None = None) -> None:
        """Stop every process started here; blocking, safe to call twice.

        By default SIGKILL at once (a test's database is dropped right after, nothing to
        flush); with `grace_s`, SIGTERM first and SIGKILL whoever is still up after it. A
        frozen process is sent SIGCONT first so that it can act on the signal."""
        for server in self.started:
            server.thaw()
            if grace_s is None:
                server.kill()
            else:
                server.terminate()
        deadline = time.monotonic() + (grace_s or 0.0)
        for server in self.started:
            try:
                server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.kill()
                server.process.wait(timeout=10)


def log_time(entry: Mapping[str, Any]) -> float:
    """A structlog ISO timestamp (UTC) as a `time.time()` value."""
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


async def first_status(
    session: aiohttp.ClientSession,
    server: Server,
    headers: Mapping[str, str],
    *,
    status: int = 200,
    timeout_s: float,
    interval_s: float = 0.01,
) -> float:
    """Poll fetches on `server` until one answers `status`; returns time.monotonic() when that
    answer arrived. Raises TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = await server.fetch(session, headers, timeout_s=1.0)
        if answer.status == status:
            return time.monotonic()
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"{server} did not answer {status} within {timeout_s} s")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); with 20 values p99 is the maximum."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]
