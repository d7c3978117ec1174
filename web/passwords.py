"""argon2id hashing off the event loop, with bounded concurrency.

argon2-cffi's C code releases the GIL, so a small thread pool hashes in parallel while the
loop keeps serving; the pool's size is the bound, so 50 simultaneous logins queue here
instead of starving other requests.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, concurrency: int) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID
        )
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        # Verified against when the username is unknown, so both cases cost the same.
        self._decoy = self._argon2.hash("decoy password never used")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._argon2.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when password matches; an unknown user (None) costs the same and is False."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._verify, password_hash or self._decoy, password, password_hash
        )

    def _verify(self, candidate: str, password: str, real: str | None) -> bool:
        try:
            self._argon2.verify(candidate, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return real is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._argon2.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
