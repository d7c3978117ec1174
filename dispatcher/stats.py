"""Counters the actor keeps about itself, read by the metrics endpoint and the CLI.

Plain numbers, no metrics library: the dispatcher stays usable without the web layer, and
the exporter turns these into Prometheus series.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class DispatcherStats:
    batches: int = 0
    commands: int = 0
    assigned: int = 0
    sold: int = 0
    released: int = 0
    # Batches sent by the writer straight after the previous commit, decided meanwhile.
    pipelined: int = 0
    reloads: int = 0
    rescans: int = 0
    failed_commits: int = 0
    # Of those, the ones that waited too long for a row another session had locked.
    row_lock_waits_given_up: int = 0
    overloaded: int = 0
    leadership_gained: int = 0
    leadership_lost: int = 0
    # (size, commit seconds) of recent batches, for the benchmark report.
    recent_batches: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=10_000))
    # Called with (size, commit seconds) for every committed batch, e.g. to feed histograms.
    batch_observers: list[Callable[[int, float], None]] = field(default_factory=list)

    def batch_committed(self, *, size: int, assigned: int, sold: int, commit_s: float) -> None:
        self.batches += 1
        self.commands += size
        self.assigned += assigned
        self.sold += sold
        self.recent_batches.append((size, commit_s))
        for observe in self.batch_observers:
            observe(size, commit_s)
