"""DATABASE_URL checked before the first connection.

The driver and the socket layer report a mistake in the URL as whatever they trip over: an
OverflowError for port 99999 (uvloop even says the connection was refused), a ValueError for
an unclosed bracket, a bare `gaierror` for a host name that does not exist. Checked here, each
is one line naming what is wrong. The parse follows asyncpg's (keep in sync with
asyncpg/connect_utils.py `_parse_connect_dsn_and_args`): several hosts separated by commas,
IPv6 in brackets, and `host` / `port` in the query too, where a host may be a socket folder.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import parse_qs, unquote, urlsplit

from storage.errors import DatabaseUnavailable, InvalidDatabaseUrl

SCHEMES = ("postgresql", "postgres")


async def check_database_url(url: str) -> None:
    """Raise InvalidDatabaseUrl naming what is wrong with `url`: its scheme, a malformed
    host, a port out of range, a host name that does not exist. DatabaseUnavailable when a
    host name cannot be looked up right now (retrying later is safe)."""
    hosts = parse_hosts(url)
    for host in hosts:
        await _resolve(host)


def parse_hosts(url: str) -> list[str]:
    """The host names of `url` (neither addresses nor socket folders), once its syntax is
    checked; raises InvalidDatabaseUrl."""
    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in SCHEMES:
        raise InvalidDatabaseUrl("DATABASE_URL must start with postgresql:// or postgres://")
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed bracket
        raise InvalidDatabaseUrl(f"DATABASE_URL: {exc}") from exc
    hosts: list[str] = []
    ports: list[str] = []
    # user:password@host1:port1,host2:port2; a password may hold any character, hence rpartition.
    for spec in parts.netloc.rpartition("@")[2].split(","):
        host, port = _split_host_port(unquote(spec))
        hosts.append(host)
        ports.append(port)
    for value in query.get("host", []):
        hosts.extend(unquote(host) for host in value.split(","))
    for value in query.get("port", []):
        ports.extend(value.split(","))
    for port in ports:
        _check_port(port)
    return [host for host in hosts if host and not host.startswith("/") and not _is_address(host)]


def _split_host_port(spec: str) -> tuple[str, str]:
    if spec.startswith("["):
        address, closed, rest = spec[1:].partition("]")
        if not closed or not _is_address(address) or (rest and not rest.startswith(":")):
            raise InvalidDatabaseUrl(f"DATABASE_URL: malformed IPv6 host {spec!r}")
        return address, rest[1:]
    host, _, port = spec.partition(":")
    return host, port


def _check_port(port: str) -> None:
    if not port:
        return  # the default, 5432
    if not port.isascii() or not port.isdigit():
        raise InvalidDatabaseUrl(f"DATABASE_URL: port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise InvalidDatabaseUrl(f"DATABASE_URL: port out of range ({port}; 1-65535)")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _resolve(host: str) -> None:
    try:
        await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise InvalidDatabaseUrl(f"DATABASE_URL: unknown host {host!r}") from exc
        raise DatabaseUnavailable(
            f"database unavailable: cannot look up host {host!r} ({exc.strerror})"
        ) from exc
