"""With `metrics_port` set, the operations routes live on their own listener, not the main one."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from config.settings import Settings
from tests.support.in_process import AppServer
from tests.support.postgres import free_port
from web.app import create_app
from web.keys import DISPATCHER, OPS_RUNNER

DEADLINE_S = 15  # seconds; only reached when something is broken
OPS_PATHS = ("/healthz", "/readyz", "/metrics")


@pytest.fixture
def ops_settings(settings: Settings) -> Settings:
    return Settings.model_validate({**settings.model_dump(), "metrics_port": free_port()})


async def test_ops_routes_move_to_the_metrics_port(ops_settings):
    main = TestClient(AppServer(create_app(ops_settings)))
    await main.start_server()
    try:
        await asyncio.wait_for(main.app[DISPATCHER].leading.wait(), DEADLINE_S)
        host, port = main.app[OPS_RUNNER].addresses[0][:2]
        assert host == "127.0.0.1"
        assert port != main.port
        for path in OPS_PATHS:
            response = await main.get(path)
            assert response.status == 404, path

        async with aiohttp.ClientSession(f"http://{host}:{port}") as ops:
            async with ops.get("/healthz") as live:
                assert live.status == 200
                assert await live.json() == {"status": "ok"}
                assert live.headers["X-Request-ID"]
            async with ops.get("/readyz") as ready:
                assert ready.status == 200
                assert (await ready.json())["role"] == "leader"
            async with ops.get("/api/tickets/fetch_tickets/") as api:
                assert api.status == 404  # only the operations routes listen here
            async with ops.get("/metrics") as scrape:
                assert scrape.status == 200
                text = await scrape.text()
        # One registry for both listeners: the main port's 404s are in the ops port's scrape.
        assert (
            'ticketsystem_http_requests_total{method="GET",route="unmatched",status="404"} 4.0'
            in text
        )
        assert 'route="/readyz",status="200"} 1.0' in text
    finally:
        await main.close()

    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as late, late.get(f"http://{host}:{port}/healthz"):
            pass
