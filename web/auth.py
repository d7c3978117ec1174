"""Token authentication and the caller's roles.

Keys are `secrets.token_urlsafe(32)`; only their SHA-256 is stored. Looking a key up by its
hash is itself the comparison, and the hash found is compared again in constant time.

Principals are cached for `auth_cache_ttl_s` (under a second), so a revoked token or a
deactivated or deleted user stops working on every process within that time, while a busy
agent's requests rarely reach the database for authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from storage.database import Database
from web.errors import NotAuthenticated, PermissionDenied


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
    return key


def digests_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


class Authenticator:
    def __init__(self, database: Database, *, cache_ttl_s: float, max_cached: int = 100_000):
        self._database = database
        self._ttl_s = cache_ttl_s
        self._max_cached = max_cached
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

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
        return principal

    async def _load(self, digest: bytes) -> Principal | None:
        row = await self._database.fetchrow("auth_principal_by_token_hash", digest)
        if row is None or not digests_equal(row["key_sha256"], digest) or not row["is_active"]:
            return None
        return Principal(
            user_id=row["user_id"],
            username=row["username"],
            is_staff=row["is_staff"],
            agent_id=row["agent_id"],
            agent_is_active=bool(row["agent_is_active"]),
        )

    def forget(self, digest: bytes) -> None:
        """Drop a revoked key at once in this process (others follow within the TTL)."""
        self._cache.pop(digest, None)

    def forget_all(self) -> None:
        self._cache.clear()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("Only admins may do this.")


def require_agent(principal: Principal) -> None:
    if not principal.is_agent:
        raise PermissionDenied("Only active agents may do this.")


def require_admin_or_agent(principal: Principal) -> None:
    if not (principal.is_admin or principal.is_agent):
        raise PermissionDenied("Only admins and active agents may do this.")
