"""Every knob of the service, read once from the environment into one typed object.

Names carry their unit (``_s``, ``_bytes``); a default says why it has its value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    # None means: start the embedded PostgreSQL under data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # A separate listener for /healthz, /readyz and /metrics; None serves them on the main port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    # Enough for the dispatcher's reads around batches plus CRUD traffic; the dispatcher
    # writes on its own dedicated connection, not from this pool.
    db_pool_min_size: int = 2
    db_pool_max_size: int = 20
    db_statement_timeout_s: float = 30.0

    # OWASP's floor for argon2id is m=19 MiB, t=2, p=1.
    argon2_memory_kib: int = Field(default=19456, ge=19456)
    argon2_time_cost: int = Field(default=2, ge=2)
    # Hashing is CPU-bound C code that releases the GIL; one per core keeps the loop free.
    password_hash_concurrency: int = 2

    login_failures_allowed: int = 5
    login_failure_window_s: float = 60.0
    # Revocations and deactivations must reach every process within a second.
    auth_cache_ttl_s: float = Field(default=0.5, le=1.0)

    max_body_bytes: int = 1024 * 1024

    # The dispatcher: see dispatcher/actor.py for what each one trades.
    # At least the largest capacity an agent may have, so one fetch always fits the window.
    dispatcher_window_size: int = Field(default=100_000, ge=1000)
    # 500 commands are up to ~7,500 row changes: big enough to share a commit widely, small
    # enough that one statement stays far below the write timeout.
    dispatcher_max_batch: int = Field(default=1000, ge=1)
    dispatcher_rescan_interval_s: float = 30.0
    dispatcher_heartbeat_interval_s: float = 0.5
    dispatcher_retry_after_s: int = 1
    dispatcher_lock_key: int = 7_302_211

    log_level: str = "info"
    # None picks JSON when stdout is not a terminal and colour when it is.
    log_format: str | None = None
