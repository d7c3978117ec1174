"""The Procfile under honcho: one web process leads, the others stand by, and a killed leader
is replaced by a standby.

What honcho does (read in honcho 2.0's source, honcho/environ.py and manager.py):

* `-c web=2` starts web.1 with $PORT and web.2 with $PORT + 1; each further process *type*
  in the Procfile moves the base on by 100. Naming `web` starts only that type.
* Like foreman, honcho stops the whole formation as soon as any process exits (SIGTERM to
  every process group, SIGKILL 5 s later). So `honcho start` with our Procfile, which has a
  `release` type that exits once migrated, would stop everything within seconds: start
  `honcho start -c web=2 web`. And a killed leader takes its standby down with it, which
  the first test pins down; the second shows the takeover over HTTP with each web process
  under a supervisor of its own, as on a platform that runs one process per dyno or host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.deploy.conftest import (
    BIN,
    ROOT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Started,
    descendants,
    fetch_at,
    gone,
    port_pair,
    service_env,
    wait_until,
)
from tests.support.factories import Actor

TAKEOVER_BOUND_S = 10.0


def honcho(started: Started, folder: Path, database_url: str, port: int, *args: str):
    """`honcho start ARGS` on the repository's Procfile, in its own folder, with an empty .env
    (a developer's .env would override the test's DATABASE_URL)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.env").write_text("")
    output = (folder / "honcho.log").open("wb")
    try:
        return started.popen(
            [
                str(BIN / "honcho"),
                "start",
                "--no-colour",
                "-f",
                str(ROOT / "Procfile"),
                "-e",
                str(folder / "empty.env"),
                *args,
            ],
            cwd=folder,
            env=service_env(database_url, PORT=str(port)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    finally:
        output.close()


def holder_of(holder: str) -> tuple[int, int]:
    """(pid, port) from a dispatcher identity `host:pid:port`."""
    _host, pid, port = holder.rsplit(":", 2)
    return int(pid), int(port)


async def leadership(db: asyncpg.Connection) -> asyncpg.Record:
    return await db.fetchrow("SELECT epoch, holder FROM dispatcher_leadership")


async def one_leader_one_standby(
    session: aiohttp.ClientSession, ports: list[int], probe: Actor
) -> tuple[int, int]:
    """Wait until one port answers a fetch 200 and the other 503 standby: (leader, standby)."""

    async def roles() -> tuple[int, int] | None:
        answers = {port: await fetch_at(session, port, probe.headers) for port in ports}
        leaders = [port for port, answer in answers.items() if answer.status == 200]
        standbys = [port for port, answer in answers.items() if answer.is_standby]
        if len(leaders) == 1 and len(standbys) == 1:
            return leaders[0], standbys[0]
        return None

    return await wait_until(roles, timeout_s=START_TIMEOUT_S, what="one leader, one standby")


def read(folder: Path) -> str:
    return (folder / "honcho.log").read_text(errors="replace")


@pytest.mark.slow
async def test_two_web_processes_under_honcho_one_leads_and_a_death_stops_the_formation(
    started: Started, tmp_path: Path, database_url: str, db, session, probe
) -> None:
    base = port_pair()
    runner = honcho(started, tmp_path, database_url, base, "-c", "web=2", "web")

    leader_port, standby_port = await one_leader_one_standby(session, [base, base + 1], probe)
    before = await leadership(db)
    leader_pid, port = holder_of(before["holder"])
    assert port == leader_port, read(tmp_path)
    assert {leader_port, standby_port} == {base, base + 1}
    assert leader_pid in descendants(runner.pid)
    started.remember_children()

    os.kill(leader_pid, signal.SIGKILL)

    # honcho sees web.N exit and stops the rest of the formation (SIGTERM): the standby goes
    # too, whether or not it got the lock first. Nothing is left running, nothing locked.
    try:
        runner.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"honcho still running {STOP_TIMEOUT_S} s after web.N died:\n{read(tmp_path)}")
    log = read(tmp_path)
    assert "stopped (rc=-9)" in log  # the killed leader itself: the Procfile execs it
    assert "sending SIGTERM to web." in log
    assert all(gone(pid) for pid in started.children), log
    await no_lock_held(db)


@pytest.mark.slow
async def test_a_standby_under_its_own_supervisor_leads_when_the_leader_is_killed(
    started: Started, tmp_path: Path, database_url: str, db, session, probe
) -> None:
    """Two formations (`honcho start web`, one web process each), like two hosts."""
    base = port_pair()
    first = honcho(started, tmp_path / "a", database_url, base, "web")
    second = honcho(started, tmp_path / "b", database_url, base + 1, "web")
    runners = {base: first, base + 1: second}

    leader_port, standby_port = await one_leader_one_standby(session, [base, base + 1], probe)
    before = await leadership(db)
    leader_pid, port = holder_of(before["holder"])
    assert port == leader_port
    started.remember_children()

    killed = time.monotonic()
    os.kill(leader_pid, signal.SIGKILL)

    async def leads() -> bool:
        return (await fetch_at(session, standby_port, probe.headers, timeout_s=1)).status == 200

    await wait_until(leads, timeout_s=TAKEOVER_BOUND_S, what="the standby answering 200")
    took = time.monotonic() - killed
    after = await leadership(db)
    assert after["epoch"] == before["epoch"] + 1
    assert holder_of(after["holder"])[1] == standby_port
    print(f"SIGKILL of the leader → standby answers 200 after {took:.2f} s")

    # The dead process's supervisor ends with it; the survivor's stops on SIGTERM, cleanly.
    runners[leader_port].wait(timeout=STOP_TIMEOUT_S)
    survivor = runners[standby_port]
    survivor.send_signal(signal.SIGTERM)
    survivor.wait(timeout=STOP_TIMEOUT_S)
    assert all(gone(pid) for pid in started.children)
    await no_lock_held(db)


async def no_lock_held(db: asyncpg.Connection) -> None:
    """No session holds an advisory lock in this database any more (a backend ends a moment
    after its client: bounded wait)."""

    async def free() -> bool:
        held = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return held == 0

    await wait_until(free, timeout_s=5, what="the dispatcher lock released")


@pytest.mark.slow
async def test_plain_honcho_start_stops_once_the_release_process_is_done(
    started: Started, tmp_path: Path, database_url: str
) -> None:
    """`release: tickets migrate` is a one-off (Heroku runs it before a deploy); honcho runs
    it as one more process, and its exit stops the formation: name `web` to leave it out."""
    # release comes first in the Procfile, so the web processes get $PORT + 100 and + 101: a
    # web process that found its port taken would exit first and stop release (rc=-15).
    base = port_pair(type_offset=100)
    runner = honcho(started, tmp_path, database_url, base, "-c", "web=2")
    try:
        runner.wait(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"honcho still running:\n{read(tmp_path)}")
    log = read(tmp_path)
    assert "release.1 stopped (rc=0)" in log, log
    assert "sending SIGTERM to web.1" in log or "web.1 stopped" in log, log
    started.remember_children()
    assert all(gone(pid) for pid in started.children)
