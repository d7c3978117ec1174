"""The dispatcher's metrics alone (no server, no database): each batch is observed once."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.stats import DispatcherStats
from web.metrics import DispatcherCollector, Metrics


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def dispatcher(stats: DispatcherStats, role: str = "leader") -> SimpleNamespace:
    return SimpleNamespace(role=role, stats=stats, inbox_depth=2, queue_length=7, held_count=3)


def registry_for(thing: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(lambda: thing))  # type: ignore[arg-type, return-value]
    return registry


def test_batches_are_observed_once_across_scrapes():
    stats = DispatcherStats()
    thing = dispatcher(stats)
    metrics = Metrics(dispatcher=lambda: thing)  # type: ignore[arg-type, return-value]
    metrics.watch(stats)
    registry = metrics.registry
    stats.batch_committed(size=1, assigned=1, sold=0, commit_s=0.002)
    stats.batch_committed(size=30, assigned=10, sold=20, commit_s=0.02)

    first = scrape(registry)
    again = scrape(registry)
    stats.batch_committed(size=3, assigned=0, sold=3, commit_s=0.004)
    later = scrape(registry)

    assert first == again
    assert first[("ticketsystem_dispatcher_batch_size_count", ())] == 2
    assert first[("ticketsystem_dispatcher_batch_size_sum", ())] == 31
    assert first[("ticketsystem_dispatcher_batch_size_bucket", (("le", "1.0"),))] == 1
    assert first[("ticketsystem_dispatcher_batch_size_bucket", (("le", "20.0"),))] == 1
    assert first[("ticketsystem_dispatcher_batch_size_bucket", (("le", "50.0"),))] == 2
    assert later[("ticketsystem_dispatcher_batch_size_count", ())] == 3
    assert later[("ticketsystem_dispatcher_batch_size_sum", ())] == 34
    assert later[("ticketsystem_dispatcher_batch_commit_duration_seconds_count", ())] == 3
    assert later[("ticketsystem_dispatcher_tickets_assigned_total", ())] == 11
    assert later[("ticketsystem_dispatcher_tickets_sold_total", ())] == 23


def test_every_batch_reaches_the_histograms_however_many_between_scrapes():
    stats = DispatcherStats()
    metrics = Metrics(dispatcher=lambda: dispatcher(stats))  # type: ignore[arg-type, return-value]
    metrics.watch(stats)
    for size in range(1, 20_001):
        stats.batch_committed(size=size % 7 + 1, assigned=1, sold=0, commit_s=0.001)

    seen = scrape(metrics.registry)

    assert seen[("ticketsystem_dispatcher_batches_total", ())] == 20_000
    assert seen[("ticketsystem_dispatcher_batch_size_count", ())] == 20_000


def test_a_standby_has_no_queue_series_and_no_dispatcher_means_not_leading():
    standby = scrape(registry_for(dispatcher(DispatcherStats(), role="standby")))
    starting = scrape(registry_for(None))

    assert standby[("ticketsystem_dispatcher_leader", ())] == 0
    assert ("ticketsystem_dispatcher_backlog_tickets", ()) not in standby
    assert ("ticketsystem_dispatcher_held_tickets", ()) not in standby
    assert standby[("ticketsystem_dispatcher_inbox_depth", ())] == 2
    assert starting == {("ticketsystem_dispatcher_leader", ()): 0}


def test_http_series_match_the_librarys_counter_and_histogram():
    """HttpCollector against prometheus_client's own Counter and Histogram, fed the same
    requests: every sample but the library's `_created` timestamps is the same."""
    metrics = Metrics(dispatcher=lambda: None)
    reference = CollectorRegistry()
    counter = Counter(
        "ticketsystem_http_requests", "", ["method", "route", "status"], registry=reference
    )
    histogram = Histogram(
        "ticketsystem_http_request_duration_seconds", "", ["method", "route"], registry=reference
    )
    # Bucket bounds themselves (buckets are "<="), between them, zero and beyond the last.
    durations = [0.0, 0.005, 0.0050001, 0.02, 0.1, 0.75, 1.0, 9.99, 10.0, 42.0]
    requests = [
        ("POST", "/api/tickets/fetch_tickets/", 200),
        ("POST", "/api/tickets/sell_tickets/", 409),
        ("GET", "unmatched", 404),
        ("BREW", "unmatched", 405),
    ]
    for at, seconds in enumerate(durations * 3):
        method, route, status = requests[at % len(requests)]
        metrics.observe_request(method, route, status, seconds)
        label = method if method != "BREW" else "other"
        counter.labels(label, route, str(status)).inc()
        histogram.labels(label, route).observe(seconds)

    ours = {key: value for key, value in scrape(metrics.registry).items() if "_http_" in key[0]}
    theirs = {key: value for key, value in scrape(reference).items() if "_created" not in key[0]}

    assert ours == theirs
    assert (
        ours[
            (
                "ticketsystem_http_requests_total",
                (("method", "other"), ("route", "unmatched"), ("status", "405")),
            )
        ]
        == 7
    )
