"""A pgbouncer in front of a test cluster, to show what the service does behind a pooler.

pgbouncer comes from Debian's package (`.ci/run` installs it); it refuses to run as root, so
it runs as the cluster's own system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yarl import URL

from tests.support.postgres import free_port

_SYSTEM_USER = "embedded_postgres"


def _binary() -> str | None:
    # Debian installs it in /usr/sbin, which a non-login PATH may lack.
    found = shutil.which("pgbouncer")
    if found is None and Path("/usr/sbin/pgbouncer").exists():
        found = "/usr/sbin/pgbouncer"
    return found


def available() -> bool:
    return _binary() is not None


@contextmanager
def pgbouncer(dsn: str, *, pool_mode: str) -> Iterator[str]:
    """Run pgbouncer in `pool_mode` in front of the server of `dsn`; yields a DSN through it."""
    target = URL(dsn)
    folder = Path(tempfile.mkdtemp(prefix="ts-pgbouncer-"))
    port = free_port()
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={target.host} port={target.port} user={target.user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {pool_mode}\ndefault_pool_size = 4\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    binary = _binary()
    assert binary is not None, "pgbouncer is not installed"
    command = [binary, str(config)]
    if os.geteuid() == 0:
        entry = pwd.getpwnam(_SYSTEM_USER)
        folder.chmod(0o755)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        command[1:1] = ["-u", _SYSTEM_USER]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (folder / "pgbouncer.pid").exists():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"pgbouncer did not start: {config.read_text()}")
            time.sleep(0.05)
        yield str(target.with_host("127.0.0.1").with_port(port))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
