"""The benchmark's run order and pooling: ABBA rounds cancel a machine's linear drift from the
ratio, and every round of ours must meet the latency, error and integrity targets on its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.bench import _targets, markdown
from bench.rounds import comparisons, run_order

SYSTEMS = ["ours", "baseline"]


def _run(system: str, round_no: int, *, sold: float, window_s: float = 20.0, p99: float = 10.0):
    return {
        "system": system,
        "connections": 100,
        "round": round_no,
        "window_s": window_s,
        "sold": sold,
        "sold_per_s": sold / window_s,
        "requests_per_s": sold / window_s / 7.5,
        "latency_ms": {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99},
        "errors": {"total": 0},
        "integrity": {"ok": True, "prefix_ok": True},
        "cpu": {"wall_s": window_s},
        "db": {
            "batch_rows": {"mean": 1, "p50": 1, "p99": 1},
            "batch_commands": {"mean": 1, "p50": 1, "p99": 1},
        },
        "leader_commits": None,
        "starved": False,
        "driver": "wrk",
        "threads": 2,
    }


def _letters(rounds: int) -> str:
    return "".join("A" if system == "ours" else "B" for _, system in run_order(SYSTEMS, rounds))


def test_rounds_follow_the_thue_morse_sequence():
    assert run_order(SYSTEMS, 1) == [(1, "ours"), (1, "baseline")]
    assert run_order(SYSTEMS, 2) == [(1, "ours"), (1, "baseline"), (2, "baseline"), (2, "ours")]
    assert _letters(3) == "ABBABA"
    assert _letters(4) == "ABBABAAB"
    assert _letters(8) == "ABBABAABBAABABBA"
    assert run_order(["ours"], 2) == [(1, "ours"), (2, "ours")]
    with pytest.raises(ValueError):
        run_order(SYSTEMS, 0)


def _measured(
    rounds: int, true_ratio: float, speed: Callable[[int], float]
) -> list[dict[str, Any]]:
    """Runs in the bench's order on a machine whose speed at the n-th run is speed(n)."""
    runs = []
    for slot, (round_no, system) in enumerate(run_order(SYSTEMS, rounds)):
        rate = (true_ratio if system == "ours" else 1.0) * 10_000 * speed(slot)
        runs.append(_run(system, round_no, sold=rate * 20.0))
    return runs


def _measured_under_drift(rounds: int, true_ratio: float, drift: float) -> list[dict[str, Any]]:
    return _measured(rounds, true_ratio, lambda slot: 1.0 + drift * slot)


@given(
    rounds=st.sampled_from([2, 4, 8]),
    true_ratio=st.floats(min_value=1.0, max_value=20.0),
    drift=st.floats(min_value=-0.1, max_value=0.1),
)
def test_a_linear_drift_cancels_from_the_pooled_ratio_of_an_even_number_of_rounds(
    rounds, true_ratio, drift
):
    [comparison] = comparisons(_measured_under_drift(rounds, true_ratio, drift))
    assert comparison.sold_ratio == pytest.approx(true_ratio, rel=1e-9)


def test_a_curved_drift_cancels_from_four_rounds_but_not_from_two():
    def curved(slot: int) -> float:
        return 1.0 + 0.01 * slot + 0.01 * slot**2

    [abba] = comparisons(_measured(2, 5.0, curved))
    assert abba.sold_ratio != pytest.approx(5.0, rel=1e-3)
    [abba_baab] = comparisons(_measured(4, 5.0, curved))
    assert abba_baab.sold_ratio == pytest.approx(5.0, rel=1e-9)


def test_one_round_carries_the_drift_into_the_ratio():
    # The reason for rounds: ours first, then the baseline on a machine 10% faster.
    [comparison] = comparisons(_measured_under_drift(1, 5.0, 0.1))
    assert comparison.sold_ratio == pytest.approx(5.0 / 1.1)


def test_pooling_weighs_each_run_by_its_window_and_keeps_each_rounds_own_ratio():
    runs = [
        _run("ours", 1, sold=60_000.0, window_s=10.0),
        _run("baseline", 1, sold=10_000.0, window_s=10.0),
        _run("baseline", 2, sold=30_000.0, window_s=20.0),
        _run("ours", 2, sold=80_000.0, window_s=20.0),
    ]
    [comparison] = comparisons(runs)
    assert comparison.ours.sold_per_s == pytest.approx(140_000 / 30)
    assert comparison.baseline.sold_per_s == pytest.approx(40_000 / 30)
    assert comparison.sold_ratio == pytest.approx(3.5)
    assert comparison.round_ratios == pytest.approx([6.0, 80_000 / 30_000])


def test_a_system_measured_alone_is_not_compared():
    assert comparisons([_run("ours", 1, sold=1.0), _run("ours", 2, sold=1.0)]) == []


def _report_inputs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "started": "now",
        "machine": {"cores": 2, "machine": "x", "python": "3"},
        "settings": {"warmup": 3, "duration": 20, "rounds": 2},
        "template": {"tickets": 1},
        "http": runs,
    }


def test_one_slow_round_of_ours_misses_the_p99_target_however_good_the_other():
    runs = [
        _run("ours", 1, sold=600_000.0, p99=12.0),
        _run("baseline", 1, sold=100_000.0, p99=200.0),
        _run("baseline", 2, sold=100_000.0, p99=200.0),
        _run("ours", 2, sold=600_000.0, p99=51.0),
    ]
    targets = {name: (measured, ok) for name, measured, ok in _targets(_report_inputs(runs))}
    assert targets["sold/s ≥ 5× baseline @ 100"] == ("6.00×", True)
    assert targets["p99 < 50 ms @ 100 (every round)"] == ("12.0 / 51.0 ms", False)
    assert targets["zero errors @ 100 (every round)"] == ("0 / 0", True)
    report = markdown(_report_inputs(runs))
    assert "| ours | 100 | 2 |" in report and "| baseline | 100 | 2 |" in report
    assert "| 100 | 6.00× | 6.00×, 6.00× |" in report
