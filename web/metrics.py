"""Prometheus metrics: each app's own registry, the HTTP middleware, the dispatcher collector.

Every app gets a `CollectorRegistry` of its own, never the library's global default, so several
apps in one process (the tests run a leader and a standby side by side) do not clash.

- HTTP: the middleware counts every answered request by method, *route pattern* (never the raw
  path: ids and junk URLs would make a series per request) and status, and times it. It sits
  outside `error_middleware`, so it sees the status of rendered errors too. `HttpCollector`
  keeps those numbers in plain dicts and builds the families at scrape time.
- Dispatcher: `DispatcherCollector` reads `Dispatcher.stats` and a few properties at scrape
  time; dispatcher/ knows nothing of Prometheus. The batch histograms are exact: the app
  registers an observer on `stats.batch_observers` (`Metrics.watch`) when its dispatcher starts.

Keep the README's "Metrics" section in sync with the names and meanings here.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

from web.statuses import CLIENT_CLOSED_REQUEST, answered_status

if TYPE_CHECKING:
    from dispatcher.actor import Dispatcher
    from dispatcher.stats import DispatcherStats

PREFIX = "ticketsystem"

# Any other method string is the client's invention: one label value for all of them, so a
# client cannot create series at will.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Up to the dispatcher's default max_batch (2,000 commands).
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
# Up to the dispatcher's write_timeout_s (5 s), past which it gives leadership up.
COMMIT_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


def route_label(request: web.Request) -> str:
    """The matched route's pattern (`/api/tickets/{id}/`), or `unmatched` (404/405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def method_label(method: str) -> str:
    return method if method in _METHODS else "other"


class Metrics:
    """One app's registry and the series the web layer updates itself."""

    def __init__(self, dispatcher: Callable[[], Dispatcher | None]) -> None:
        """`dispatcher` returns the app's dispatcher, or None before it starts."""
        self.registry = CollectorRegistry()
        self.http = HttpCollector()
        self.registry.register(self.http)
        self.batch_size = Histogram(
            f"{PREFIX}_dispatcher_batch_size",
            "Commands (fetches and sells) per committed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_commit_duration = Histogram(
            f"{PREFIX}_dispatcher_batch_commit_duration_seconds",
            "Seconds from starting a batch to its COMMIT (prepare, decide, write).",
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(DispatcherCollector(dispatcher))

    def watch(self, stats: DispatcherStats) -> None:
        """Feed the batch histograms from a dispatcher's stats, every batch exactly once."""

        def observe(size: int, commit_s: float) -> None:
            self.batch_size.observe(size)
            self.batch_commit_duration.observe(commit_s)

        stats.batch_observers.append(observe)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.observe(method_label(method), route, status, seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    def middleware(self) -> Middleware:
        """The HTTP middleware; place it outside `error_middleware` to see rendered errors."""

        @web.middleware
        async def http_metrics_middleware(
            request: web.Request, handler: Handler
        ) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = answered_status(request, response)
                return response
            except web.HTTPException as exc:  # redirects; error_middleware renders the rest
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = CLIENT_CLOSED_REQUEST  # the client went away: nothing was answered
                raise
            finally:
                elapsed = time.perf_counter() - started
                self.observe_request(request.method, route_label(request), status, elapsed)

        return http_metrics_middleware


class HttpCollector(Collector):
    """Requests answered by (method, route, status) and their durations by (method, route).

    Counted in plain dicts on the event loop, where every request and every scrape runs: the
    library's labelled Counter and Histogram lock and look up their children on each update,
    which took 2-8 µs more per request than these dicts (three alternating runs of a bare
    aiohttp server under wrk). The labels come from `method_label` and route patterns, never
    raw input, so the dicts are as bounded as the series are.
    """

    def __init__(self, buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS) -> None:
        self._bounds = tuple(bound for bound in buckets if bound != INF)
        self._answered: dict[tuple[str, str, int], int] = {}
        # Per (method, route): a count per bucket (the last one +Inf), then the sum of seconds.
        self._durations: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self._answered[key] = self._answered.get(key, 0) + 1
        timing = self._durations.get((method, route))
        if timing is None:
            timing = self._durations[(method, route)] = [0] * (len(self._bounds) + 2)
        # The first bound >= seconds: buckets are "less than or equal".
        timing[bisect.bisect_left(self._bounds, seconds)] += 1
        timing[-1] += seconds

    def collect(self) -> Iterable[Metric]:
        answered = CounterMetricFamily(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by method, route pattern and status code.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(self._answered.items()):
            answered.add_metric([method, route, str(status)], count)
        yield answered
        durations = HistogramMetricFamily(
            f"{PREFIX}_http_request_duration_seconds",
            "Seconds from receiving an HTTP request to its response, by method and route.",
            labels=["method", "route"],
        )
        labels = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        for (method, route), timing in sorted(self._durations.items()):
            cumulative, buckets = 0.0, []
            for label, in_bucket in zip(labels, timing[:-1], strict=True):
                cumulative += in_bucket
                buckets.append((label, cumulative))
            durations.add_metric([method, route], buckets, sum_value=timing[-1])
        yield durations


class DispatcherCollector(Collector):
    """The dispatcher's numbers, read from `Dispatcher.stats` and properties at scrape time."""

    def __init__(self, dispatcher: Callable[[], Dispatcher | None]) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterable[Metric]:
        dispatcher = self._dispatcher()
        leading = dispatcher is not None and dispatcher.role == "leader"
        yield _gauge("leader", "1 while this process leads the dispatcher, else 0.", int(leading))
        if dispatcher is None:
            return
        yield from self._from(dispatcher, leading=leading)

    def _from(self, dispatcher: Dispatcher, *, leading: bool) -> Iterator[Metric]:
        stats = dispatcher.stats
        yield _gauge(
            "inbox_depth",
            "Commands waiting in the dispatcher's inbox for the next batch.",
            dispatcher.inbox_depth,
        )
        if leading:
            # A standby's memory is stale: better absent than wrong (sums over instances).
            yield _gauge(
                "backlog_tickets",
                "Unassigned tickets in the leader's queue (at most the window size).",
                dispatcher.queue_length,
            )
            yield _gauge(
                "held_tickets",
                "Tickets assigned to agents and not yet sold, as the leader knows them.",
                dispatcher.held_count,
            )
        yield _counter("batches", "Batches of fetches and sells committed.", stats.batches)
        yield _counter("commands", "Fetches and sells answered after a commit.", stats.commands)
        yield _counter("tickets_assigned", "Tickets assigned to agents.", stats.assigned)
        yield _counter("tickets_sold", "Tickets sold.", stats.sold)
        yield _counter(
            "tickets_released",
            "Tickets given back to the queue (agent released, deactivated or capacity lowered).",
            stats.released,
        )
        yield _counter(
            "pipelined_batches",
            "Batches decided while the previous one committed and sent as soon as it returned.",
            stats.pipelined,
        )
        yield _counter(
            "reloads", "Rebuilds of the dispatcher's memory from the database.", stats.reloads
        )
        yield _counter(
            "rescans", "Periodic re-reads of the unassigned queue from the database.", stats.rescans
        )
        yield _counter(
            "failed_commits",
            "Batches and admin commands whose commit failed (every waiter got 503).",
            stats.failed_commits,
        )
        yield _counter(
            "row_lock_waits_given_up",
            "Batches, admin commands, loads and rescans that gave up waiting for a lock"
            " another session held (a row or a table of the dispatcher's).",
            stats.row_lock_waits_given_up,
        )
        yield _counter(
            "overload_rejections",
            "Commands refused with 503 because the inbox was full.",
            stats.overloaded,
        )
        changes = CounterMetricFamily(
            f"{PREFIX}_dispatcher_leadership_changes",
            "Leadership gained or lost by this process.",
            labels=["change"],
        )
        changes.add_metric(["gained"], stats.leadership_gained)
        changes.add_metric(["lost"], stats.leadership_lost)
        yield changes


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_dispatcher_{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    # The family adds `_total` to the exposed sample.
    return CounterMetricFamily(f"{PREFIX}_dispatcher_{name}", documentation, value=value)
