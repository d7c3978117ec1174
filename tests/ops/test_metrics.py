"""/metrics after real traffic: the series exist, agree with the database, and pass promtool."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"
SELL = "/api/tickets/sell_tickets/"
DEADLINE_S = 15  # seconds; only reached when something is broken


class Scrape:
    """One parsed scrape: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(client) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(await response.text())


async def run_load(client, make) -> dict[str, int]:
    """A few agents fetching and selling at once; returns how many requests of each kind."""
    await make.tickets(60)
    agents = [await make.agent(capacity=4) for _ in range(5)]
    fetches = sells = 0
    for _ in range(3):
        responses = await asyncio.gather(
            *(client.post(FETCH, headers=agent.headers) for agent in agents)
        )
        fetches += len(responses)
        held = [[t["id"] for t in (await r.json())["tickets"]] for r in responses]
        for r in responses:
            assert r.status == 200
        sold = await asyncio.gather(
            *(
                client.post(SELL, json={"ticket_ids": ids[:2]}, headers=agent.headers)
                for agent, ids in zip(agents, held, strict=True)
            )
        )
        sells += len(sold)
        assert {r.status for r in sold} == {200}
    return {"fetches": fetches, "sells": sells}


async def test_metrics_agree_with_the_database_after_load(leader, make, db):
    load = await run_load(leader, make)
    refused = await leader.post(FETCH)  # no token: a rendered 401 must be counted too
    assert refused.status == 401
    missing = await leader.get("/api/no/such/path/12345")
    assert missing.status == 404

    metrics = await scrape(leader)

    assigned = await db.fetchval("SELECT count(*) FROM ticket_events WHERE event = 'assigned'")
    sold = await db.fetchval("SELECT count(*) FROM ticket_events WHERE event = 'sold'")
    held = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'assigned'")
    unassigned = await db.fetchval("SELECT count(*) FROM tickets WHERE status = 'unassigned'")
    assert assigned == 5 * 4 + 5 * 2 + 5 * 2  # filled to capacity, then topped up twice
    assert metrics.value("ticketsystem_dispatcher_tickets_assigned_total") == assigned
    assert metrics.value("ticketsystem_dispatcher_tickets_sold_total") == sold == 30
    assert metrics.value("ticketsystem_dispatcher_tickets_released_total") == 0
    assert metrics.value("ticketsystem_dispatcher_held_tickets") == held == 10
    assert metrics.value("ticketsystem_dispatcher_backlog_tickets") == unassigned == 20
    assert metrics.value("ticketsystem_dispatcher_leader") == 1
    assert metrics.value("ticketsystem_dispatcher_inbox_depth") == 0
    assert metrics.value("ticketsystem_dispatcher_reloads_total") == 1
    assert metrics.value("ticketsystem_dispatcher_failed_commits_total") == 0
    assert metrics.value("ticketsystem_dispatcher_leadership_changes_total", change="gained") == 1
    assert metrics.value("ticketsystem_dispatcher_leadership_changes_total", change="lost") == 0

    commands = load["fetches"] + load["sells"]
    batches = leader.app[DISPATCHER].stats.batches
    assert metrics.value("ticketsystem_dispatcher_commands_total") == commands
    assert metrics.value("ticketsystem_dispatcher_batches_total") == batches
    assert metrics.value("ticketsystem_dispatcher_batch_size_count") == batches
    assert metrics.value("ticketsystem_dispatcher_batch_size_sum") == commands
    assert metrics.value("ticketsystem_dispatcher_batch_size_bucket", le="+Inf") == batches
    assert metrics.value("ticketsystem_dispatcher_batch_commit_duration_seconds_count") == batches
    assert 0 < metrics.value("ticketsystem_dispatcher_batch_commit_duration_seconds_sum") < 60

    fetch_ok = {"method": "POST", "route": FETCH, "status": "200"}
    assert metrics.value("ticketsystem_http_requests_total", **fetch_ok) == load["fetches"]
    sell_ok = {"method": "POST", "route": SELL, "status": "200"}
    assert metrics.value("ticketsystem_http_requests_total", **sell_ok) == load["sells"]
    fetch_401 = {"method": "POST", "route": FETCH, "status": "401"}
    assert metrics.value("ticketsystem_http_requests_total", **fetch_401) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert metrics.value("ticketsystem_http_requests_total", **unmatched) == 1
    fetch_timing = {"method": "POST", "route": FETCH}
    assert (
        metrics.value("ticketsystem_http_request_duration_seconds_count", **fetch_timing)
        == load["fetches"] + 1
    )
    assert "12345" not in metrics.text  # raw paths never become label values
    assert metrics.types["ticketsystem_dispatcher_batch_size"] == "histogram"
    assert metrics.types["ticketsystem_dispatcher_tickets_assigned"] == "counter"


async def test_a_second_scrape_counts_no_batch_twice(leader, make):
    await run_load(leader, make)
    first = await scrape(leader)
    second = await scrape(leader)

    for name in (
        "ticketsystem_dispatcher_batch_size_count",
        "ticketsystem_dispatcher_batch_size_sum",
        "ticketsystem_dispatcher_batch_commit_duration_seconds_count",
    ):
        assert second.value(name) == first.value(name)
    # The scrape itself is counted (after it is answered).
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    assert second.value("ticketsystem_http_requests_total", **scrapes) == 1


async def test_a_standby_exports_no_queue_of_its_own(standby):
    metrics = await scrape(standby)
    assert metrics.value("ticketsystem_dispatcher_leader") == 0
    assert "ticketsystem_dispatcher_backlog_tickets" not in metrics.names()
    assert "ticketsystem_dispatcher_held_tickets" not in metrics.names()


async def test_openmetrics_when_the_scraper_asks_for_it(leader):
    response = await leader.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


async def test_promtool_accepts_a_real_scrape(leader, make):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`); .ci/run installs it")
    await run_load(leader, make)
    await leader.get("/healthz")
    text = (await scrape(leader)).text

    checker = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(checker.communicate(text.encode()), DEADLINE_S)

    assert checker.returncode == 0, output.decode()
    assert output.decode().strip() == ""
