"""Settings read from the environment: each value that would break the service is refused,
naming its variable, before anything starts (no database needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cli.support import settings_problems
from config.settings import Settings


def refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_problems(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        # Each of these was accepted and broke something later (named after the #).
        ("LOGIN_FAILURES_ALLOWED", "0", "greater than or equal to 1"),  # every login 500
        ("LOGIN_FAILURES_ALLOWED", "-1", "greater than or equal to 1"),
        ("LOGIN_FAILURES_ALLOWED_PER_ADDRESS", "0", "greater than or equal to 1"),
        ("LOGIN_FAILURE_WINDOW_S", "0", "greater than 0"),
        ("AUTH_CACHE_TTL_S", "0", "greater than or equal to 0.05"),  # an idle server spins
        ("AUTH_CACHE_TTL_S", "-1", "greater than or equal to 0.05"),
        ("AUTH_CACHE_TTL_S", "1.5", "less than or equal to 1"),
        ("AUTH_CACHE_TTL_S", "nan", "finite number"),  # nan passes every bound
        ("DISPATCHER_RESCAN_INTERVAL_S", "0", "greater than or equal to 0.1"),  # busy loop
        ("DISPATCHER_RESCAN_INTERVAL_S", "-1", "greater than or equal to 0.1"),
        ("DISPATCHER_RESCAN_INTERVAL_S", "inf", "finite number"),
        ("DISPATCHER_HEARTBEAT_INTERVAL_S", "0", "greater than or equal to 0.05"),
        ("DISPATCHER_HEARTBEAT_INTERVAL_S", "10", "less than or equal to 2.5"),
        ("DISPATCHER_RETRY_AFTER_S", "0", "greater than or equal to 1"),
        ("DISPATCHER_MAX_BATCH", "0", "greater than or equal to 1"),
        ("DISPATCHER_WINDOW_SIZE", "10", "greater than or equal to 1000"),
        # The dispatcher re-claimed leadership 18 times a second, failing each time.
        ("DISPATCHER_WINDOW_SIZE", str(2**63 - 1), "less than or equal to 1000000"),
        ("DISPATCHER_MAX_BATCH", str(10**9), "less than or equal to 5000"),
        ("DISPATCHER_ROW_LOCK_WAIT_S", "0", "greater than or equal to 0.01"),
        ("DISPATCHER_ROW_LOCK_WAIT_S", "5", "less than or equal to 4"),  # past the write timeout
        ("DISPATCHER_LOCK_KEY", str(2**63), "less than or equal to"),
        ("DB_POOL_MAX_SIZE", "0", "greater than or equal to 1"),  # a long traceback
        ("DB_POOL_MIN_SIZE", "-1", "greater than or equal to 0"),
        ("DB_STATEMENT_TIMEOUT_S", "0", "greater than or equal to 0.001"),
        ("DB_STATEMENT_TIMEOUT_S", "-5", "greater than or equal to 0.001"),
        ("PASSWORD_HASH_CONCURRENCY", "0", "greater than or equal to 1"),
        ("PASSWORD_HASH_CONCURRENCY", "1000", "less than or equal to 64"),
        ("ARGON2_MEMORY_KIB", "1000", "greater than or equal to 19456"),
        ("ARGON2_MEMORY_KIB", str(2**32), "less than or equal to 1048576"),  # a crash at start
        ("ARGON2_TIME_COST", "1", "greater than or equal to 2"),
        ("ARGON2_TIME_COST", "1000", "less than or equal to 10"),  # a login took 13 s
        ("MAX_BODY_BYTES", "0", "greater than or equal to 1024"),
        ("BODY_READ_TIMEOUT_S", "0", "greater than or equal to 1"),  # cut honest uploads
        ("BODY_READ_TIMEOUT_S", "600", "less than or equal to 75"),
        ("BODY_READ_TIMEOUT_S", "inf", "finite number"),  # a stalled body held on for ever
        ("PORT", "", "valid integer"),
        ("PORT", "70000", "less than or equal to 65535"),
        ("METRICS_PORT", "-1", "greater than or equal to 1"),
        ("METRICS_PORT", "0", "greater than or equal to 1"),  # listened where no one knew
        ("PORT", "0", "greater than or equal to 1"),
        ("HOST", "", "must not be empty"),  # listened on every interface
        ("HOST", "  ", "must not be empty"),
        ("DATA_DIR", "", "must not be empty"),
        ("LOG_LEVEL", "bogus", "must be one of debug, info, warning, error, critical"),
        ("LOG_LEVEL", "", "must be one of"),
        ("LOG_FORMAT", "jsno", "must be one of json, console, auto"),  # was colour, silently
        ("LOG_FORMAT", "", "must be one of"),
    ],
)
def test_a_value_that_would_break_the_service_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, rule: str
) -> None:
    problem = refusal(monkeypatch, **{variable: value})
    assert problem.startswith(f"{variable}: must ")
    assert rule in problem
    assert "\n" not in problem


def test_the_pool_minimum_may_not_exceed_its_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = refusal(monkeypatch, DB_POOL_MIN_SIZE="5", DB_POOL_MAX_SIZE="2")
    assert problem == "DB_POOL_MIN_SIZE (5) must not exceed DB_POOL_MAX_SIZE (2)"


def test_the_metrics_port_may_not_be_the_main_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refusal(monkeypatch, PORT="8123", METRICS_PORT="8123") == (
        "METRICS_PORT must differ from PORT"
    )


def test_every_refused_variable_is_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = refusal(monkeypatch, HOST="", LOG_LEVEL="loud")
    assert problem.startswith("HOST: must not be empty")
    assert "; LOG_LEVEL: must be one of" in problem


@pytest.mark.parametrize(
    ("env", "level", "log_format"),
    [
        ({"LOG_LEVEL": "WARNING", "LOG_FORMAT": "JSON"}, "warning", "json"),
        ({"LOG_LEVEL": " Debug ", "LOG_FORMAT": "Console"}, "debug", "console"),
        ({"LOG_LEVEL": "error", "LOG_FORMAT": "auto"}, "error", None),
        ({}, "info", None),
    ],
)
def test_log_level_and_format_take_the_documented_values_in_any_case(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], level: str, log_format: str | None
) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.log_level, settings.log_format) == (level, log_format)


def test_the_defaults_are_valid() -> None:
    # Constructed without the environment's values, as the README's table documents them.
    defaults = Settings.model_construct()
    assert Settings.model_validate(defaults.model_dump()) == defaults
