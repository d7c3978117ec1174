"""Joining the embedded PostgreSQL while it is starting or stopping.

The wheel takes a running server as it finds it and asserts that it is ready: a command run
while PostgreSQL recovered from a crash (seconds, after a restart) died with an
AssertionError traceback, `serve` with exit 1. Here a `sleep` stands in for the postmaster
(its PID is what postmaster.pid names), so the status line is the test's to set.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import embedded
from storage.errors import DataDirUnusable


@pytest.fixture
def postmaster() -> Iterator[int]:
    with subprocess.Popen(["sleep", "60"]) as stand_in:
        try:
            yield stand_in.pid
        finally:
            stand_in.kill()


def write_postmaster_pid(pgdata: Path, pid: int, status: str) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    lines = [str(pid), str(pgdata), str(int(time.time())), "", str(pgdata), "", "0 0", status]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")


def test_the_wait_ends_when_the_server_is_ready(tmp_path: Path, postmaster: int) -> None:
    pgdata = tmp_path / "postgres"
    write_postmaster_pid(pgdata, postmaster, "starting")
    ready = threading.Timer(0.5, write_postmaster_pid, (pgdata, postmaster, "ready"))
    ready.start()
    started = time.monotonic()
    embedded._wait_while_starting_or_stopping(pgdata, timeout_s=10)
    waited = time.monotonic() - started
    ready.join()
    assert 0.4 <= waited < 5


@pytest.mark.parametrize("status", ["ready", None], ids=["ready", "no postmaster.pid"])
def test_no_wait_for_a_ready_server_or_none(
    tmp_path: Path, postmaster: int, status: str | None
) -> None:
    pgdata = tmp_path / "postgres"
    if status is not None:
        write_postmaster_pid(pgdata, postmaster, status)
    started = time.monotonic()
    embedded._wait_while_starting_or_stopping(pgdata, timeout_s=10)
    assert time.monotonic() - started < 1


def test_a_server_that_stays_in_transition_is_one_line_not_a_traceback(
    tmp_path: Path, postmaster: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgdata = tmp_path / "postgres"
    write_postmaster_pid(pgdata, postmaster, "stopping")
    (pgdata / "PG_VERSION").write_text("18\n")  # so the wheel does not run initdb
    monkeypatch.setattr(embedded, "TRANSITION_TIMEOUT_S", 0.3)
    with pytest.raises(DataDirUnusable, match="is starting or stopping; try again"):
        embedded.start(tmp_path, stop_at_exit=False)
