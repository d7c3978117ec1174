"""What the report says of each run beside its throughput: the leader connection's commits, from
two scrapes of the server's /metrics, and the server's CPU per request."""

from __future__ import annotations

from bench.bench import (
    COMMIT_COUNT,
    COMMIT_SECONDS,
    COMMITS_WITHIN_SLOW,
    SLOW_COMMIT_MS,
    _commit_share,
    _server_us_per_request,
    _slow_commits,
)
from bench.harness import sample_key
from web.metrics import COMMIT_SECONDS_BUCKETS

WALL = {"wall_s": 10.0}


def test_commits_over_the_bucket_bound_are_counted_between_the_scrapes():
    before = {COMMIT_SECONDS: 4.0, COMMIT_COUNT: 500, COMMITS_WITHIN_SLOW: 497}
    after = {COMMIT_SECONDS: 13.0, COMMIT_COUNT: 1_500, COMMITS_WITHIN_SLOW: 1_494}
    share = _commit_share(before, after, WALL)
    assert share == {
        "busy_share": 0.9,
        "commits_per_s": 100.0,
        "mean_commit_ms": 9.0,
        # 1,000 commits in the window, 997 of them within the bound: three slow ones (the
        # three slow ones before the window do not count).
        "slow_commits": 3,
    }


def test_a_server_without_the_histogram_has_no_account():
    assert _commit_share({}, {}, WALL) is None
    partial = {COMMIT_SECONDS: 1.0, COMMIT_COUNT: 10}
    assert _commit_share(partial, partial, WALL) is None


def test_a_run_saved_before_the_count_existed_shows_a_dash_not_zero():
    assert _slow_commits({"busy_share": 0.9}) == "–"
    assert _slow_commits({"slow_commits": 0}) == "0"
    assert _slow_commits({"slow_commits": 1_234}) == "1,234"


def test_sample_keys_are_written_as_the_exposition_format_writes_them():
    assert sample_key("up", {}) == "up"
    assert sample_key("x_bucket", {"le": "0.05"}) == 'x_bucket{le="0.05"}'
    assert sample_key("x", {"b": "2", "a": "1"}) == 'x{a="1",b="2"}'
    assert (
        sample_key("ticketsystem_dispatcher_batch_commit_duration_seconds_bucket", {"le": "0.05"})
        == COMMITS_WITHIN_SLOW
    )


def test_the_slow_bound_is_a_bucket_the_server_exports():
    # Otherwise the bucket is missing from every scrape and runs have no account at all.
    assert SLOW_COMMIT_MS / 1000 in COMMIT_SECONDS_BUCKETS


def test_server_cpu_per_request_is_the_process_cpu_over_the_requests_it_answered():
    run = {"requests": 50_000, "cpu": {"server_cpu_s": 6.5, "wall_s": 10.0}}
    assert _server_us_per_request(run) == "130"
    assert _server_us_per_request({"requests": 0, "cpu": {"server_cpu_s": 1.0}}) == "–"
    assert _server_us_per_request({"requests": 10, "cpu": {}}) == "–"
