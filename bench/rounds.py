"""The order of the HTTP runs, and how their rounds are pooled into one ratio per connection count.

The machine drifts: on these shared 2-core VMs the same run can be 10% faster a minute later.
Measured as ours-then-baseline, a run's drift lands wholly on the ratio. In ABBA order (ours,
baseline, baseline, ours) a drift that is roughly linear over the four runs gives both systems
the same mean time, so it cancels out of the pooled ratio; ABBA BAAB (four rounds) cancels a
curved one too, and gives each system the first place once. Each round's own ratio is kept
beside the pooled one to show how far the machine moved.

Pure functions over the run dicts that bench.bench produces; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def run_order(systems: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, system) for one connection count. Round n runs the systems in the order given
    or reversed as the Thue-Morse sequence says (the parity of n - 1's one bits): two rounds
    of (ours, baseline) are ABBA, four are ABBA BAAB, where each system also runs first
    once in each half."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    order: list[tuple[int, str]] = []
    for round_no in range(1, rounds + 1):
        reverse = (round_no - 1).bit_count() % 2 == 1
        this_round = list(reversed(systems)) if reverse else list(systems)
        order.extend((round_no, system) for system in this_round)
    return order


@dataclass(frozen=True)
class Pooled:
    """One system at one connection count, over all its rounds."""

    runs: tuple[dict[str, Any], ...]

    @property
    def sold_per_s(self) -> float:
        """Tickets sold over the summed measured windows: each round weighs by its length."""
        window_s = sum(run["window_s"] for run in self.runs)
        return sum(run["sold"] for run in self.runs) / window_s if window_s else 0.0

    def mean(self, percentile: str) -> float:
        return sum(run["latency_ms"][percentile] for run in self.runs) / len(self.runs)


@dataclass(frozen=True)
class Comparison:
    connections: int
    ours: Pooled
    baseline: Pooled

    @property
    def sold_ratio(self) -> float:
        base = self.baseline.sold_per_s
        return self.ours.sold_per_s / base if base else float("inf")

    @property
    def round_ratios(self) -> list[float]:
        """ours ÷ baseline within each round, whose two runs were measured back to back."""
        by_round = {_round(run): run for run in self.baseline.runs}
        return [
            run["sold_per_s"] / by_round[_round(run)]["sold_per_s"]
            for run in self.ours.runs
            if _round(run) in by_round and by_round[_round(run)]["sold_per_s"]
        ]


def _round(run: dict[str, Any]) -> int:
    """Results saved before rounds existed had one round."""
    return int(run.get("round", 1))


def by_system_and_connections(
    runs: Sequence[dict[str, Any]],
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Each (system, connection count)'s runs, in the order they ran."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["system"], run["connections"]), []).append(run)
    return grouped


def comparisons(runs: Sequence[dict[str, Any]]) -> list[Comparison]:
    """Ours against the baseline at every connection count both were run at."""
    grouped = by_system_and_connections(runs)
    return [
        Comparison(
            connections,
            Pooled(tuple(grouped[("ours", connections)])),
            Pooled(tuple(grouped[("baseline", connections)])),
        )
        for connections in sorted({run["connections"] for run in runs})
        if ("ours", connections) in grouped and ("baseline", connections) in grouped
    ]
