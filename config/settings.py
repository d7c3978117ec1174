"""Every knob of the service, read once from the environment into one typed object.

Names carry their unit (``_s``, ``_bytes``); a default says why it has its value, a bound
why a value beyond it would break the service. A value out of bounds is refused when the
settings are read, so it stops every command at once with the variable's name instead of
failing later, somewhere else (a login that answers 500, an idle loop spinning the CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["json", "console"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
# "auto" is the same as unset: JSON when stdout is not a terminal, colour when it is.
LOG_FORMATS: tuple[str, ...] = (*get_args(LogFormat), "auto")


class Settings(BaseSettings):
    # allow_inf_nan=False: "nan" passes every comparison a bound makes, and "inf" is a
    # timeout that never ends.
    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", frozen=True, allow_inf_nan=False
    )

    # None means: start the embedded PostgreSQL under data_dir.
    database_url: str | None = None
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    # Not 0: a port the system picks is announced nowhere, so no client could find it.
    port: int = Field(default=8000, ge=1, le=65535)
    # A separate listener for /healthz, /readyz and /metrics; None serves them on the main port.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # Enough for the dispatcher's reads around batches plus CRUD traffic; the dispatcher
    # writes on its own dedicated connection, not from this pool.
    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=20, ge=1)
    # Sent as whole milliseconds, where 0 would mean "no timeout"; PostgreSQL's ceiling is
    # 2^31 - 1 ms.
    db_statement_timeout_s: float = Field(default=30.0, ge=0.001, le=2_147_483)

    # OWASP's floor for argon2id is m=19 MiB, t=2, p=1. Every login pays for the hash, and
    # every hash in flight holds its memory: at the ceilings one login takes seconds here
    # (1 GiB, t=2: 2.6 s), which is as slow as a login may get before clients time out.
    argon2_memory_kib: int = Field(default=19456, ge=19456, le=1024 * 1024)
    argon2_time_cost: int = Field(default=2, ge=2, le=10)
    # Hashing is CPU-bound C code that releases the GIL; one per core keeps the loop free.
    # Each worker may hold ARGON2_MEMORY_KIB at once, so the ceiling bounds the memory too.
    password_hash_concurrency: int = Field(default=2, ge=1, le=64)

    # Zero would refuse every login before its password is even checked.
    login_failures_allowed: int = Field(default=5, ge=1)
    # Over every username from one address: a spray of one password over many accounts.
    # Generous, as an office behind one NAT address shares it.
    login_failures_allowed_per_address: int = Field(default=50, ge=1)
    login_failure_window_s: float = Field(default=60.0, gt=0)
    # Revocations and deactivations must reach every process within a second. Keys in use
    # are revalidated every half of it, so a tiny value is a busy loop of queries.
    auth_cache_ttl_s: float = Field(default=0.5, ge=0.05, le=1.0)

    # A login or a small ticket must fit.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # How long a body may take to arrive once its headers have: aiohttp bounds the headers
    # (at its keep-alive timeout, 75 s) but never the body, so a client that stops sending
    # held its handler for ever. Under a second would cut an honest 1 MiB upload on a slow
    # link; past 75 s a body would be allowed longer than its headers are.
    body_read_timeout_s: float = Field(default=30.0, ge=1.0, le=75.0)

    # The dispatcher: see dispatcher/actor.py for what each one trades.
    # At least the largest capacity an agent may have, so one fetch always fits the window.
    # At most a million ids (about 40 MB of Python ints): a larger window buys nothing, as a
    # refill is one indexed read, and costs memory and the memmove of every out-of-order id.
    dispatcher_window_size: int = Field(default=100_000, ge=1000, le=1_000_000)
    # 500 commands are up to ~7,500 row changes: big enough to share a commit widely, small
    # enough that one statement stays far below the write timeout.
    # At most 5000 commands, up to ~75,000 row changes: still well inside the write timeout.
    dispatcher_max_batch: int = Field(default=1000, ge=1, le=5000)
    # Each rescan reads the whole window; more often than this would be a busy loop.
    dispatcher_rescan_interval_s: float = Field(default=30.0, ge=0.1)
    # An idle leader's session is ended by PostgreSQL after the write timeout (5 s,
    # DispatcherOptions.write_timeout_s: keep in sync), so it must beat well within it.
    dispatcher_heartbeat_interval_s: float = Field(default=0.5, ge=0.05, le=2.5)
    # How long the dispatcher waits for one lock another session holds (a tickets row, a
    # table) before the batch's requests get 503. Below the write timeout (5 s, as above),
    # past which a waiting step means a stalled connection and leadership is given up.
    dispatcher_row_lock_wait_s: float = Field(default=1.0, ge=0.01, le=4.0)
    # Retry-After: 0 would tell clients to retry in a tight loop.
    dispatcher_retry_after_s: int = Field(default=1, ge=1)
    # PostgreSQL advisory lock keys are bigints.
    dispatcher_lock_key: int = Field(default=7_302_211, ge=-(2**63), le=2**63 - 1)

    log_level: LogLevel = "info"
    # None picks JSON when stdout is not a terminal and colour when it is.
    log_format: LogFormat | None = None

    @field_validator("host", mode="before")
    @classmethod
    def _host_not_blank(cls, value: object) -> object:
        # Blank reaches the listener as "every interface": say 0.0.0.0 when that is meant.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (use 0.0.0.0 to listen on every interface)")
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_not_blank(cls, value: object) -> object:
        # Path("") is the working directory: a blank value is a mistake, not a choice.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in LOG_LEVELS:
            return value.strip().lower()
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")

    @field_validator("log_format", mode="before")
    @classmethod
    def _known_log_format(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() in LOG_FORMATS:
            normal = value.strip().lower()
            return None if normal == "auto" else normal
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                f"DB_POOL_MIN_SIZE ({self.db_pool_min_size}) must not exceed"
                f" DB_POOL_MAX_SIZE ({self.db_pool_max_size})"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT")
        return self
