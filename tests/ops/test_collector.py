"""The dispatcher's metrics alone (no server, no database): each batch is observed once."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest
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
