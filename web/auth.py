"""Token authentication and the caller's roles.

Keys are `secrets.token_urlsafe(32)`; only their SHA-256 is stored. Looking a key up by its
hash is itself the comparison, and the hash found is compared again in constant time.

Principals are cached for `auth_cache_ttl_s` (under a second), so a revoked token or a
deactivated or deleted user stops working on every process within that time. Keys in use are
revalidated together, in one query every half TTL, before they expire: a busy agent's
requests never wait on the database for authentication, and thousands of agents cost one
query per interval rather than one per agent per TTL (under load those single lookups were
a twentieth of the server's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from storage.database import Database
from web.errors import NotAuthenticated, PermissionDenied

log = structlog.get_logger(__name__)

# Keys revalidated per query: bounds one statement's parameter size.
_REFRESH_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    username: str
    is_staff: bool
    agent_id: int | None
    agent_is_active: bool

    @property
    def is_admin(self) -> bool:
        return self.is_staff

    @property
    def is_agent(self) -> bool:
        return self.agent_id is not None and self.agent_is_active


def new_key() -> str:
    return secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_from_header(value: str | None) -> str | None:
    """The key in `Token <key>` or `Bearer <key>`; None when absent or malformed."""
    if not value:
        return None
    scheme, _, key = value.strip().partition(" ")
    key = key.strip()
    if scheme.lower() not in ("token", "bearer") or not key or " " in key or len(key) > 256:
        return None
    # Keys are ASCII. aiohttp hands other header bytes over as lone surrogates, which no
    # digest can encode.
    if not key.isascii():
        return None
    return key


def request_key_digest(request: web.Request) -> bytes:
    """The stored form of the key this request authenticated with (after principal())."""
    key = key_from_header(request.headers.get("Authorization"))
    assert key is not None, "principal() accepts no request without a key"
    return key_digest(key)


def digests_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class Authenticator:
    def __init__(self, database: Database, *, cache_ttl_s: float, max_cached: int = 100_000):
        self._database = database
        self._ttl_s = cache_ttl_s
        self._max_cached = max_cached
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        # Keys served from the cache since the last revalidation: only those are kept warm.
        self._used: set[bytes] = set()
        # Bumped by forget(): a revalidation that read the store before a revocation in this
        # process must not put the revoked key back.
        self._generation = 0
        self._refresher: asyncio.Task[None] | None = None
        self.loads = 0  # single-key lookups (cache misses)
        self.refreshes = 0  # revalidation queries

    async def start(self) -> None:
        """Start revalidating keys in use every half TTL (until close())."""
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="auth-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def principal(self, request: web.Request) -> Principal:
        """The authenticated caller; raises NotAuthenticated (401) otherwise."""
        key = key_from_header(request.headers.get("Authorization"))
        if key is None:
            raise NotAuthenticated()
        digest = key_digest(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            principal = cached[1]
        else:
            principal = await self._load(digest)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl_s, principal)
        if principal is None:
            raise NotAuthenticated("Invalid token.")
        self._used.add(digest)
        return principal

    async def _load(self, digest: bytes) -> Principal | None:
        self.loads += 1
        row = await self._database.fetchrow("auth_principal_by_token_hash", digest)
        if row is None or not digests_equal(row["key_sha256"], digest):
            return None
        return _principal(row)

    async def _refresh_forever(self) -> None:
        failing = False  # log a database outage once, not four times a second
        while True:
            await asyncio.sleep(self._ttl_s / 2)
            try:
                await self.refresh()
            except Exception as error:  # the keys then expire and load one by one
                if not failing:
                    log.warning("auth_refresh_failed", error=repr(error))
                failing = True
            else:
                if failing:
                    log.info("auth_refresh_recovered")
                failing = False

    async def refresh(self) -> None:
        """Revalidate every cached key used since the last refresh, in one query per chunk.

        A key's new expiry counts from before the query, so a revocation committed before
        it is seen within one TTL, as with a single lookup.
        """
        used, self._used = self._used, set()
        digests = [digest for digest in used if digest in self._cache]
        for at in range(0, len(digests), _REFRESH_CHUNK):
            chunk = digests[at : at + _REFRESH_CHUNK]
            started, generation = time.monotonic(), self._generation
            self.refreshes += 1
            rows = await self._database.fetch("auth_principals_by_token_hashes", chunk)
            if generation != self._generation:
                return  # something was revoked meanwhile: let these keys load afresh
            found = {bytes(row["key_sha256"]): _principal(row) for row in rows}
            expires = started + self._ttl_s
            for digest in chunk:
                if digest in self._cache:
                    self._cache[digest] = (expires, found.get(digest))

    def forget(self, digest: bytes) -> None:
        """Drop a revoked key at once in this process (others follow within the TTL)."""
        self._generation += 1
        self._cache.pop(digest, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._cache.clear()

    def forget_user(self, user_id: int) -> None:
        """A user's roles changed (activity, admin, agent): this process sees it at its
        next request, as for a revoked key. Unknown keys go too: one of them may be this
        user's, refused while it was inactive. The rest of the cache stays warm."""
        self._generation += 1
        stale = [
            digest
            for digest, (_, principal) in self._cache.items()
            if principal is None or principal.user_id == user_id
        ]
        for digest in stale:
            del self._cache[digest]


def _principal(row: Mapping[str, Any]) -> Principal | None:
    if not row["is_active"]:
        return None
    return Principal(
        user_id=row["user_id"],
        username=row["username"],
        is_staff=row["is_staff"],
        agent_id=row["agent_id"],
        agent_is_active=bool(row["agent_is_active"]),
    )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("Only admins may do this.")


def require_agent(principal: Principal) -> None:
    if not principal.is_agent:
        raise PermissionDenied("Only active agents may do this.")


def require_admin_or_agent(principal: Principal) -> None:
    if not (principal.is_admin or principal.is_agent):
        raise PermissionDenied("Only admins and active agents may do this.")
