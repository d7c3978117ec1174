"""A setting that would break the service stops every command before it starts: exit 2, one
line naming the variable and its rule, no traceback."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Tickets, explain

COMMANDS = [
    ("serve",),
    ("migrate",),
    ("createsuperuser", "--username", "alice", "--noinput"),
    ("create-agent", "alice"),
    ("import-tickets", "-", "--format", "csv"),
    ("stats",),
    ("release", "1"),
    ("dispatcher", "status"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("LOGIN_FAILURES_ALLOWED", "0", "must be greater than or equal to 1"),
        ("LOG_LEVEL", "bogus", "must be one of debug, info, warning, error, critical"),
        ("HOST", "", "must not be empty"),
    ],
)
async def test_an_invalid_setting_stops_every_command_in_one_line(
    tickets: Tickets, command: tuple[str, ...], variable: str, value: str, rule: str
) -> None:
    result = await tickets.run(*command, env={variable: value}, input=b"")
    assert result.returncode == 2, explain(result)
    assert result.stderr.strip().splitlines() == [
        f"Error: invalid settings: {variable}: {rule}"
        + (" (use 0.0.0.0 to listen on every interface)" if variable == "HOST" else "")
    ]
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("database_url", "hint"),
    [
        ("postgresql://db.example/tickets", "(check DATABASE_URL, or unset it"),
        ("", "(the embedded PostgreSQL under DATA_DIR; run it again)"),
    ],
    ids=["DATABASE_URL set", "embedded"],
)
def test_an_unavailable_database_is_explained_for_the_database_in_use(
    monkeypatch: pytest.MonkeyPatch, database_url: str, hint: str
) -> None:
    """The embedded default once got the hint about a DATABASE_URL nobody had set."""
    from cli.support import Failure, run
    from storage.errors import DatabaseUnavailable

    async def lose_the_connection() -> None:
        raise DatabaseUnavailable("database unavailable: InterfaceError")

    monkeypatch.setenv("DATABASE_URL", database_url)
    with pytest.raises(Failure) as failure:
        run(lose_the_connection())
    assert failure.value.message.startswith("database unavailable: InterfaceError (")
    assert hint in failure.value.message
