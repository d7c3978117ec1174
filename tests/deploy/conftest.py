"""Deployment tests: the service as it is deployed, in real processes (`tickets serve` from
the installed script, or the Procfile under honcho), on this test's database, on loopback.

Every process a test starts is recorded and, in the finalizer, signalled by its own PID only
(SIGTERM first, SIGKILL after a grace period); descendants found through psutil likewise.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.support.factories import Actor, Factory
from tests.support.postgres import free_port
from tests.support.servers import FETCH, Answer, Server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # .venv/bin: tickets, honcho
TICKETS = BIN / "tickets"
# Variables of the developer's shell that would change what is tested.
_DROPPED = ("DATABASE_URL", "PORT", "HOST", "LOG_FORMAT", "LOG_LEVEL", "METRICS_PORT")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def service_env(database_url: str, **values: str) -> dict[str, str]:
    """The environment a deployed process gets: DATABASE_URL, info logs, the venv on PATH."""
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
    env.update(
        DATABASE_URL=database_url,
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
        DB_POOL_MIN_SIZE="1",
        DB_POOL_MAX_SIZE="10",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(values)
    return env


def port_pair(*, type_offset: int = 0) -> int:
    """A base port p with p + type_offset and the port after it free (honcho gives web.1
    $PORT and web.2 $PORT + 1, moved on by 100 for each process type listed before web)."""
    for _ in range(50):
        port = free_port()
        first = port + type_offset
        if first + 1 <= 65535 and _free(first) and _free(first + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


def _free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps, as in some containers, counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def descendants(pid: int) -> list[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


class Started:
    """Processes started by one test (and their descendants): stopped by PID at the end."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: set[int] = set()

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def remember_children(self) -> None:
        for process in self.processes:
            self.children.update(descendants(process.pid))

    def stop_all(self) -> None:
        self.remember_children()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for pid in self.children:
            if not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started() -> Iterator[Started]:
    processes = Started()
    try:
        yield processes
    finally:
        processes.stop_all()


def serve(started: Started, folder: Path, database_url: str, name: str, **env: str) -> Server:
    """`tickets serve --port N` (the installed script), stdout and stderr to files in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (
        (folder / f"{name}.jsonl").open("wb") as out,
        (folder / f"{name}.stderr").open("wb") as err,
    ):
        process = started.popen(
            [str(TICKETS), "serve", "--port", str(port)],
            cwd=folder,
            env=service_env(database_url, **env),
            stdout=out,
            stderr=err,
        )
    return Server(name, port, process, folder)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http:
        yield http


@pytest.fixture
async def probe(make: Factory) -> Actor:
    """An agent of capacity 0: the leader answers its fetch 200 [] and assigns nothing."""
    return await make.agent(capacity=0, username="probe")


async def fetch_at(
    session: aiohttp.ClientSession, port: int, headers: Mapping[str, str], *, timeout_s: float = 2
) -> Answer:
    """POST fetch_tickets on 127.0.0.1:port; Answer(0, None) when nothing answers."""
    try:
        async with session.post(
            f"http://127.0.0.1:{port}{FETCH}",
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            return Answer(response.status, await response.json(content_type=None))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return Answer(0, None)


async def wait_until(predicate: Any, *, timeout_s: float, what: str, interval_s: float = 0.05):
    """Poll the async `predicate` until it returns something truthy (returned); bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(interval_s)
