"""Every operations command explains itself."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Tickets, explain


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["stats"], ["--json", "--top", "--minutes", "Exits 2"]),
        (["release"], ["AGENT_ID", "--username", "--timeout", "--json", "Exits 1"]),
        (["dispatcher"], ["status"]),
        (["dispatcher", "status"], ["--json", "standbys"]),
    ],
)
async def test_help(tickets: Tickets, command: list[str], expected: list[str]) -> None:
    result = await tickets.invoke(*command, "--help")
    assert result.exit_code == 0, explain(result)
    assert result.stdout.startswith(f"Usage: tickets {' '.join(command)} ")
    for text in expected:
        assert text in result.stdout


async def test_the_commands_are_listed(tickets: Tickets) -> None:
    result = await tickets.invoke("--help")
    assert result.exit_code == 0, explain(result)
    for name in ["stats", "release", "dispatcher"]:
        assert f"  {name} " in result.stdout
