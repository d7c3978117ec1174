"""The benchmark's machinery, lightly: both systems over real HTTP for ~2 s each, driven by an
aiohttp client loop instead of wrk (so CI needs no apt), then the dispatcher alone for 1 s.

Asserts that every run sold tickets, without errors, with integrity — never how fast.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bench.bench import markdown, run_http
from bench.dispatcher_only import copy_rate, run_dispatcher_only
from bench.harness import create_database, drop_database, make_template
from tests.conftest import TEMPLATE

pytestmark = pytest.mark.slow

AGENTS = 4


def _logs(folder: Path, system: str) -> str:
    """The server's own log, shown when an assertion fails."""
    return "\n".join(path.read_text() for path in folder.glob(f"bench_{system}_*.log"))


@pytest.fixture
async def template(template_ready: str):
    name = f"bench_smoke_{uuid.uuid4().hex[:12]}"
    seeded = await make_template(
        template_ready, name, migrated_template=TEMPLATE, agents=AGENTS, tickets=20_000
    )
    yield seeded
    await drop_database(template_ready, name)


async def test_both_systems_sell_over_http_without_errors(template_ready, template, tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("\n".join(template.tokens) + "\n")
    runs = []
    for system in ("ours", "baseline"):
        run = await run_http(
            server_dsn=template_ready,
            template=template,
            tokens_file=tokens,
            system=system,
            connections=AGENTS,
            duration_s=2,
            warmup_s=0.5,
            threads=1,
            driver="aiohttp",
            workdir=tmp_path,
            postmaster=None,
        )
        logs = _logs(tmp_path, system)
        assert run["sold"] > 0, logs
        assert run["sold_by_responses"] > 0
        assert run["errors"] == {"non_2xx": 0, "socket": 0, "timeout": 0, "total": 0}, logs
        assert run["integrity"]["ok"], run["integrity"]
        assert run["exit_code"] == 0, logs
        runs.append(run)
    ours = runs[0]
    # Ours hands tickets out strictly in id order, batch after batch.
    assert ours["integrity"]["prefix_ok"]
    assert ours["integrity"]["batches_out_of_order"] == 0
    assert ours["db"]["batches"] > 0
    # The leader's commit time comes from its own metrics; the baseline has no dispatcher.
    commits = ours["leader_commits"]
    assert commits is not None and 0 < commits["busy_share"] <= 1.0
    assert commits["commits_per_s"] > 0 and commits["mean_commit_ms"] > 0
    # Read from a labelled bucket of the same histogram: a count, never more than all commits.
    assert 0 <= commits["slow_commits"] <= commits["commits_per_s"] * ours["cpu"]["wall_s"] + 1
    assert runs[1]["leader_commits"] is None
    report = markdown(
        {
            "started": "now",
            "machine": {"cores": 2, "machine": "x", "python": "3"},
            "settings": {"warmup": 0.5, "duration": 2},
            "template": {"tickets": template.tickets},
            "http": runs,
        }
    )
    assert "| ours | 4 |" in report and "| baseline | 4 |" in report
    assert "commits over 50 ms" in report
    assert "server CPU µs per request" in report


async def test_the_dispatcher_alone_trades_and_copy_is_measured(template_ready, template):
    name = f"bench_smoke_d_{uuid.uuid4().hex[:12]}"
    dsn = await create_database(template_ready, name, template=template.name)
    try:
        run = await run_dispatcher_only(dsn, template.agent_ids, duration_s=1, warmup_s=0.2)
        assert run["sold"] > 0 and run["assigned"] > 0
        assert run["errors"] == {}
        assert run["integrity"]["ok"] and run["integrity"]["prefix_ok"]
        assert run["db_window"]["sold"] > 0
        copied = await copy_rate(dsn, 1000)
        assert copied["rows"] == 1000 and copied["rows_per_s"] > 0
    finally:
        await drop_database(template_ready, name)
