"""The README's run command, `tickets serve`, on the embedded default (no DATABASE_URL).

Each test runs the installed console script in a temporary working directory, so the
embedded PostgreSQL keeps its data in <tmp>/.data/postgres. The service owns that server:
it starts it, and stops it when it exits after SIGTERM. These tests check both ends, and
only ever kill processes they started (the service, and the server it started for this
data directory), by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from storage.embedded import BIN_DIR
from tests.cli.conftest import TICKETS, Tickets, base_env, explain
from tests.support.postgres import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PASSWORD = "a long enough passphrase"
PSQL = BIN_DIR / "psql"


def post_login(port: int, username: str, password: str) -> tuple[int, dict[str, object]]:
    """POST /api/auth-token/; (status, JSON body). Raises OSError while nothing listens."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth-token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as answer:  # a 4xx/5xx is an answer too
        return answer.code, json.loads(answer.read() or b"null")


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded server's PID from its postmaster.pid, or None when there is none."""
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def server_processes(data_dir: Path) -> list[psutil.Process]:
    """Live (not zombie) postgres processes serving data_dir; its postmaster names it."""
    found = []
    needle = str(data_dir.resolve() / "postgres")
    for process in psutil.process_iter(["cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # exited; in a container nobody may reap it
            if needle in " ".join(process.info["cmdline"] or ()):
                found.append(process)
    return found


class Service:
    """One `tickets serve` subprocess; its output goes to a log file in the temp dir."""

    def __init__(self, cwd: Path, port: int) -> None:
        self.cwd = cwd
        self.port = port
        self.log = cwd / f"serve-{port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(TICKETS), "serve", "--port", str(port)],
                cwd=cwd,
                env=base_env(LOG_LEVEL="warning"),  # no DATABASE_URL: the embedded default
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_answering(self) -> None:
        """Poll (bounded) until POST /api/auth-token/ gets an HTTP answer."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                status, _ = post_login(self.port, "nobody", "wrong password")
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer within {START_TIMEOUT_S} s:\n{self.output()}")
                time.sleep(0.2)
                continue
            assert status == 400, self.output()
            return

    def stop(self) -> int:
        """SIGTERM, then the exit code (fails the test when it takes over STOP_TIMEOUT_S)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {STOP_TIMEOUT_S} s after SIGTERM:\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """An empty working directory; afterwards, no server for its data is left running
    (`serving` has already killed the service itself, should the test have failed).

    Not pytest's tmp_path: as root, the embedded server runs as another user, which must
    traverse every parent folder, and each new pytest session (another engineer's, say)
    resets /tmp/pytest-of-root to 0700.
    """
    path = Path(tempfile.mkdtemp(prefix="ts-serve-"))
    try:
        yield path
    finally:
        # Only the server for this test's own data directory, found by its postmaster.pid.
        pid = postmaster_pid(path / ".data")
        for process in server_processes(path / ".data"):
            if process.pid == pid:
                process.kill()
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def serving(cwd: Path) -> Iterator[Service]:
    service = Service(cwd, free_port())
    try:
        yield service
    finally:
        service.kill()


def assert_stopped_cleanly(service: Service, data_dir: Path) -> None:
    pid = postmaster_pid(data_dir)
    assert pid is not None, "the embedded server wrote no postmaster.pid"
    assert service.stop() == 0, service.output()
    assert server_processes(data_dir) == [], "the embedded server outlived the service"
    assert postmaster_pid(data_dir) is None  # removed on a clean shutdown
    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_serve_starts_on_the_embedded_default_and_stops_with_it(workdir: Path) -> None:
    data_dir = workdir / ".data"
    with serving(workdir) as service:
        service.wait_until_answering()
        assert f"ticket-system on http://127.0.0.1:{service.port}/" in service.output()
        assert (data_dir / "postgres" / "PG_VERSION").is_file()
        assert server_processes(data_dir) != []
        assert_stopped_cleanly(service, data_dir)


def test_data_persists_across_restarts(workdir: Path) -> None:
    data_dir = workdir / ".data"
    with serving(workdir) as service:
        service.wait_until_answering()
        # The CLI joins the server the service started, and leaves it running.
        created = subprocess.run(
            [str(TICKETS), "createsuperuser", "--username", "admin", "--noinput"],
            cwd=workdir,
            env=base_env(TICKETS_SUPERUSER_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        assert server_processes(data_dir) != []
        assert_stopped_cleanly(service, data_dir)

    with serving(workdir) as service:
        service.wait_until_answering()
        status, body = post_login(service.port, "admin", PASSWORD)
        assert status == 200, body
        assert isinstance(body["token"], str)
        assert_stopped_cleanly(service, data_dir)


async def test_serve_on_a_port_in_use_exits_with_2_in_one_line(tickets: Tickets) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await tickets.run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2, explain(result)
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "ticket-system on" not in result.stderr  # it never served


async def test_a_taken_metrics_port_is_the_port_named(tickets: Tickets) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        port = free_port()
        result = await tickets.run(
            "serve", "--port", str(port), env={"METRICS_PORT": str(metrics_port)}
        )
    assert result.returncode == 2, explain(result)
    assert f"Error: cannot listen on 127.0.0.1:{metrics_port}: " in result.stderr
    assert str(port) not in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_a_killed_service_does_not_keep_the_server_running_for_ever(workdir: Path) -> None:
    """SIGKILL skips every exit hook, so the killed process never says it left; the next
    ones must still stop the server, and share it while more than one lives."""
    data_dir = workdir / ".data"
    with serving(workdir) as killed:
        killed.wait_until_answering()
        killed.kill()
    assert server_processes(data_dir) != []  # orphaned, as after any crash

    with serving(workdir) as leader, serving(workdir) as standby:
        leader.wait_until_answering()
        standby.wait_until_answering()
        assert leader.stop() == 0, leader.output()
        assert server_processes(data_dir) != [], "stopped under the standby"
        status, _ = post_login(standby.port, "nobody", "wrong password")
        assert status == 400, standby.output()
        assert_stopped_cleanly(standby, data_dir)


def test_a_handle_whose_pid_was_reused_does_not_keep_the_server_running(workdir: Path) -> None:
    """A dead user's PID given to an unrelated process (here `sleep`, started after the
    recorded start time) is no user of the server."""
    data_dir = workdir / ".data"
    with serving(workdir) as service:
        service.wait_until_answering()
        with subprocess.Popen(["sleep", "60"]) as stranger:
            try:
                handles = data_dir / "postgres" / ".handle_pids.json"
                starts = data_dir / "postgres-handle-starts.json"
                recorded = json.loads(starts.read_text())
                recorded[str(stranger.pid)] = psutil.Process(stranger.pid).create_time() - 60
                starts.write_text(json.dumps(recorded))
                handles.write_text(json.dumps([stranger.pid, *json.loads(handles.read_text())]))
                assert_stopped_cleanly(service, data_dir)
            finally:
                stranger.kill()


def test_a_server_restarted_behind_the_service_is_still_stopped_by_its_last_user(
    workdir: Path,
) -> None:
    """The wheel stops the postmaster it found when it joined. PostgreSQL stopped under the
    service and started again by a command (any `tickets` command on this DATA_DIR does)
    used to outlive the service."""
    data_dir = workdir / ".data"
    with serving(workdir) as service:
        service.wait_until_answering()
        first = postmaster_pid(data_dir)
        assert first is not None
        os.kill(first, signal.SIGQUIT)  # what `pg_ctl stop -m immediate` sends
        psutil.Process(first).wait(timeout=STOP_TIMEOUT_S)
        run_stats(workdir)  # a command that finds PostgreSQL down starts it again
        second = postmaster_pid(data_dir)
        assert second not in (None, first)
        service.wait_until_answering()
        assert_stopped_cleanly(service, data_dir)
    assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE


def test_the_last_user_leaves_the_server_running_while_others_are_connected(
    workdir: Path,
) -> None:
    """Servers may join the embedded PostgreSQL through DATABASE_URL instead of DATA_DIR;
    the wheel does not count them. The last DATA_DIR process to exit — a server, or any
    `tickets` command an operator ran — stopped PostgreSQL under them: a whole-service
    outage. It now stops it only when nobody else is connected."""
    data_dir = workdir / ".data"
    dsn = f"postgresql://postgres@/postgres?host={data_dir / 'postgres'}"
    with serving(workdir) as service:
        service.wait_until_answering()
        pid = postmaster_pid(data_dir)
        # A client of its own, like a server on DATABASE_URL: idle, waiting for input.
        joined = subprocess.Popen(
            [str(PSQL), dsn, "-X", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PGAPPNAME": "joined"},
        )
        try:
            wait_for_clients(dsn, at_least=1)
            assert service.stop() == 0, service.output()
            assert postmaster_pid(data_dir) == pid, "stopped under a connected client"
            assert "left running" in service.output()
            assert joined.poll() is None, "the client's session was cut"
        finally:
            joined.kill()
            joined.communicate(timeout=STOP_TIMEOUT_S)  # closes its stdin too
    # Alone again, the next command joins the server and, last to leave, stops it.
    run_stats(workdir)
    assert postmaster_pid(data_dir) is None
    assert server_processes(data_dir) == []


def wait_for_clients(dsn: str, *, at_least: int) -> None:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'joined'"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        counted = subprocess.run(
            [str(PSQL), dsn, "-X", "-At", "-c", query],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if counted.returncode == 0 and int(counted.stdout.strip() or 0) >= at_least:
            return
        time.sleep(0.1)
    pytest.fail(f"no client connected within {START_TIMEOUT_S} s")


def run_stats(workdir: Path) -> None:
    """`tickets stats` on the embedded default of `workdir`, which must succeed."""
    stats = subprocess.run(
        [str(TICKETS), "stats", "--json"],
        cwd=workdir,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
