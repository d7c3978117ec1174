"""A DATABASE_URL that cannot work stops every command with exit 2 and one line saying
why, the way a wrong password or a missing database already did."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from yarl import URL

from tests.cli.conftest import Tickets, explain

# serve never gets as far as listening (on its default port).
COMMANDS = [("serve",), ("migrate",), ("stats",), ("create-agent", "alice")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
@pytest.mark.parametrize(
    ("make_url", "says"),
    [
        (
            lambda url: url.replace(f":{URL(url).port}/", ":99999/"),
            "DATABASE_URL: port out of range (99999; 1-65535)",
        ),
        (lambda url: f"{url}?foo=bar", 'unrecognized configuration parameter "foo"'),
        (lambda url: "postgresql://postgres@[::1/postgres", "DATABASE_URL: Invalid IPv6 URL"),
        (lambda url: "notaurl", "DATABASE_URL must start with postgresql:// or postgres://"),
        (lambda url: "mysql://u@h/db", "DATABASE_URL must start with postgresql:// or postgres://"),
        (lambda url: f"{url}?sslmode=bogus", "DATABASE_URL: `sslmode` parameter must be one of"),
        # The lookup's answer names the host whether it is "unknown" or "not now" (offline).
        (lambda url: "postgresql://postgres@nosuchhost.invalid/postgres", "'nosuchhost.invalid'"),
    ],
    ids=["port", "parameter", "ipv6", "no scheme", "mysql", "sslmode", "host"],
)
async def test_a_database_url_that_cannot_work_exits_with_2_in_one_line(
    tickets: Tickets,
    database_url: str,
    command: tuple[str, ...],
    make_url: Callable[[str], str],
    says: str,
) -> None:
    result = await tickets.run(*command, env={"DATABASE_URL": make_url(database_url)})
    assert result.returncode == 2, explain(result)
    lines = result.stderr.strip().splitlines()
    # serve too: it announces itself only once it listens.
    assert len(lines) == 1, explain(result)
    assert says in lines[-1], explain(result)
    assert "Traceback" not in result.stderr
