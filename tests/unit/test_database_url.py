"""DATABASE_URL's syntax checked before any connection (no database needed)."""

from __future__ import annotations

import socket

import pytest

from storage.dsn import check_database_url, parse_hosts
from storage.errors import DatabaseUnavailable, InvalidDatabaseUrl


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("notaurl", "DATABASE_URL must start with postgresql:// or postgres://"),
        ("mysql://u@h/db", "DATABASE_URL must start with postgresql:// or postgres://"),
        ("", "DATABASE_URL must start with postgresql:// or postgres://"),
        ("postgresql://u@h:99999/db", "DATABASE_URL: port out of range (99999; 1-65535)"),
        ("postgresql://u@h:0/db", "DATABASE_URL: port out of range (0; 1-65535)"),
        ("postgresql://u@h:abc/db", "DATABASE_URL: port 'abc' is not a number"),
        ("postgresql://u@h/db?port=70000", "DATABASE_URL: port out of range (70000; 1-65535)"),
        ("postgresql://u@a:5432,b:99999/db", "DATABASE_URL: port out of range (99999; 1-65535)"),
        ("postgresql://u@[::1/db", "DATABASE_URL: Invalid IPv6 URL"),
        ("postgresql://u@[zz::1]:5432/db", "DATABASE_URL: 'zz::1' does not appear"),
    ],
)
def test_a_malformed_url_is_refused_with_its_reason(url: str, problem: str) -> None:
    with pytest.raises(InvalidDatabaseUrl) as caught:
        parse_hosts(url)
    assert str(caught.value).startswith(problem)


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("postgresql://u:p@127.0.0.1:5432/db", []),
        ("postgres://u@[::1]:5432/db?sslmode=disable", []),
        ("postgresql://u:p%40ss@db.example:5432/db", ["db.example"]),
        ("postgresql://u:p@ss@db.example/db", ["db.example"]),  # '@' in the password
        ("postgresql://u@a:5432,b:5433/db", ["a", "b"]),
        ("postgresql:///db?host=/var/run/postgresql", []),  # a socket folder
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/db", []),
        ("POSTGRESQL://u@h/db?application_name=x&port=6432", ["h"]),
    ],
)
def test_a_url_asyncpg_takes_is_accepted(url: str, names: list[str]) -> None:
    assert parse_hosts(url) == names


async def test_a_host_name_that_does_not_exist_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", nothing)
    with pytest.raises(InvalidDatabaseUrl, match=r"^DATABASE_URL: unknown host 'nope'$"):
        await check_database_url("postgresql://u@nope:5432/db")


async def test_a_lookup_that_fails_for_now_is_an_unavailable_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def later(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr("asyncio.base_events.BaseEventLoop.getaddrinfo", later)
    with pytest.raises(DatabaseUnavailable, match=r"cannot look up host 'db\.example'"):
        await check_database_url("postgresql://u@db.example/db")
