"""An unusable DATA_DIR (the embedded default's data) stops every command with one line
that names it: not a traceback, and not a complaint about the HTTP listener."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Tickets, explain

COMMANDS = [("serve",), ("migrate",), ("stats",), ("create-agent", "alice")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
@pytest.mark.parametrize(
    ("where", "reason"),
    [(Path("a-file"), "it is a file"), (Path("a-file/below"), "Not a directory")],
    ids=["a file", "below a file"],
)
async def test_an_unusable_data_dir_exits_with_2_in_one_line(
    tickets: Tickets, tmp_path: Path, command: tuple[str, ...], where: Path, reason: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    data_dir = tmp_path / where
    # An empty DATABASE_URL is unset: the embedded default, in DATA_DIR.
    result = await tickets.run(*command, env={"DATABASE_URL": "", "DATA_DIR": str(data_dir)})
    assert result.returncode == 2, explain(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.endswith(
        f"DATA_DIR: cannot create or use the data directory {str(data_dir)!r}: {reason}"
    ), explain(result)
    assert "Traceback" not in result.stderr
    assert "cannot listen" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [("stats",), ("dispatcher", "status"), ("release", "1")],
    ids=["stats", "dispatcher status", "release"],
)
async def test_a_data_dir_where_nothing_ran_is_not_taken_for_an_empty_system(
    tickets: Tickets, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A mistyped DATA_DIR once got a fresh database, and `stats` reported it empty."""
    data_dir = tmp_path / "typo"
    result = await tickets.run(*command, env={"DATABASE_URL": "", "DATA_DIR": str(data_dir)})
    assert result.returncode == 2, explain(result)
    assert f"No database under DATA_DIR={data_dir}" in result.stderr, explain(result)
    assert not (data_dir / "postgres").exists()
