"""An unexpected failure is a JSON 500 that leaks nothing, and is logged with its request id;
a client that hangs up mid-request, or sends a body that does not decode, is no failure at
all."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from config.logs import MalformedRequestFilter
from tests.support.factories import PASSWORD
from tests.support.in_process import AppServer
from tests.support.servers import FETCH
from web.app import create_app
from web.keys import AUTHENTICATOR, DISPATCHER, LOGIN_THROTTLE

DEADLINE_S = 10  # seconds; only reached when something is broken


async def test_an_unexpected_error_is_a_quiet_500_logged_with_its_request_id(client, make, db):
    admin = await make.admin()
    # A real fault, not a mock: the schema changed under the running service.
    await db.execute("ALTER TABLE users RENAME COLUMN email TO mail")
    with structlog.testing.capture_logs() as logs:
        response = await client.get(
            "/api/users/", headers={**admin.headers, "X-Request-ID": "trace-500"}
        )
    assert response.status == 500
    body = await response.json()
    assert body["error"] == "internal_error"
    assert "request id" in body["detail"]
    text = await response.text()
    for leak in ("mail", "email", "users", "Traceback", "asyncpg", "SELECT"):
        assert leak not in text, leak
    assert response.headers["X-Request-ID"] == "trace-500"
    failures = [e for e in logs if e["event"] == "unhandled_error"]
    assert failures and failures[0]["log_level"] == "error"
    assert failures[0]["path"] == "/api/users/"
    assert failures[0]["request_id"] == "trace-500"
    assert "exc_info" in failures[0]


@pytest.mark.parametrize("cancelled", [False, True], ids=["as run_app serves", "handler cancelled"])
async def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(settings, make, cancelled):
    """Load generators and impatient clients hang up mid-request: that is no failure of ours,
    and must not bury real ones under tracebacks or count as 500s."""
    agent = await make.agent()
    server = AppServer(create_app(settings), handler_cancellation=cancelled)
    async with TestClient(server) as client:
        await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), DEADLINE_S)
        loads_before = client.app[AUTHENTICATOR].loads
        head = (
            "POST /api/tickets/sell_tickets/ HTTP/1.1\r\n"
            f"Host: test\r\nAuthorization: Token {agent.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        with structlog.testing.capture_logs() as logs:
            _, writer = await asyncio.open_connection(client.server.host, client.server.port)
            writer.write(head.encode() + b'{"ticket_ids": [')
            await writer.drain()
            # Hang up once the handler runs (it looks the token up, then reads the body).
            deadline = time.monotonic() + DEADLINE_S
            while client.app[AUTHENTICATOR].loads == loads_before:
                assert time.monotonic() < deadline, "the handler never ran"
                await asyncio.sleep(0.01)
            writer.close()
            await writer.wait_closed()
            while not any(e["event"] == "request" for e in logs):
                assert time.monotonic() < deadline, "the request never finished"
                await asyncio.sleep(0.01)
        events = {e["event"]: e for e in logs}
        assert "unhandled_error" not in events, logs
        assert events["request"]["status"] == 499
        if not cancelled:
            assert events["client_disconnected"]["log_level"] == "info"
            assert "exc_info" not in events["client_disconnected"]
        metrics = await (await client.get("/metrics")).text()
    sells = [line for line in metrics.splitlines() if "sell_tickets" in line and "status=" in line]
    assert any('status="499"' in line for line in sells), sells
    assert not any('status="500"' in line for line in sells), sells


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captures aiohttp's own records, through the filter `config.logs.configure` installs."""
    server = logging.getLogger("aiohttp.server")
    installed = MalformedRequestFilter(threshold=logging.INFO)
    server.addFilter(installed)
    caplog.set_level(logging.INFO, logger="aiohttp.server")
    try:
        yield caplog
    finally:
        server.removeFilter(installed)


def _server_records(log: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in log.records if r.name == "aiohttp.server"]


async def test_a_body_that_does_not_decode_is_one_info_line_without_a_traceback(client, server_log):
    """aiohttp drains the body after the JSON 400, meets the decoding error again and logged
    it as an unhandled exception, traceback and all: anyone could fill the log with them."""
    response = await client.post(
        "/api/auth-token/",
        data=b"notgzip",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"
    deadline = time.monotonic() + DEADLINE_S
    while not _server_records(server_log):
        assert time.monotonic() < deadline, "aiohttp logged nothing"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # room for a second record, which must not come
    (record,) = _server_records(server_log)
    assert (record.levelname, record.getMessage()) == ("INFO", "bad_http_request")
    assert record.__dict__["error"] == "ContentEncodingError"
    assert record.__dict__["status"] == 400
    assert record.exc_info is None and record.exc_text is None
    assert "notgzip" not in str(record.__dict__)


async def _send_and_hang_up(
    client: TestClient, request: str, *, once: Callable[[], bool] = lambda: True
) -> None:
    """Send a whole request, then close the connection without reading, once `once()`."""
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request.encode())
    await writer.drain()
    deadline = time.monotonic() + DEADLINE_S
    while not once():
        assert time.monotonic() < deadline, "the handler never got that far"
        await asyncio.sleep(0.001)
    writer.close()
    await writer.wait_closed()


async def _logged(logs: list[MutableMapping[str, Any]], event: str) -> MutableMapping[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while not any(e["event"] == event for e in logs):
        assert time.monotonic() < deadline, f"no {event} line"
        await asyncio.sleep(0.01)
    (line,) = [e for e in logs if e["event"] == event]
    return line


def _counted(metrics: str, route: str) -> list[str]:
    return [
        line for line in metrics.splitlines() if f'route="{route}"' in line and "status=" in line
    ]


async def test_a_fetch_whose_client_hung_up_before_its_answer_is_a_499(serve, make):
    """The fetch runs to completion, as it should (its assignment stands, and a retry returns
    it), but its 200 was never read: it was logged and counted as a 200 all the same."""
    agent = await make.agent()
    ticket = await make.ticket()
    client = await serve()
    with structlog.testing.capture_logs() as logs:
        await _send_and_hang_up(
            client,
            f"POST {FETCH} HTTP/1.1\r\nHost: test\r\nAuthorization: Token {agent.token}\r\n"
            "Content-Length: 0\r\n\r\n",
        )
        line = await _logged(logs, "request")
    assert (line["route"], line["status"]) == (FETCH, 499)
    fetches = _counted(await (await client.get("/metrics")).text(), FETCH)
    assert any('status="499"' in count for count in fetches), fetches
    assert not any('status="200"' in count for count in fetches), fetches
    retried = await client.post(FETCH, headers=agent.headers)
    assert [held["id"] for held in (await retried.json())["tickets"]] == [ticket]


async def test_a_login_whose_client_hung_up_before_its_answer_is_a_499(settings, make):
    user = await make.user()
    # A slower hash (still far below a second) leaves time to hang up while it runs.
    slow = settings.model_copy(update={"argon2_time_cost": 10})
    async with TestClient(AppServer(create_app(slow))) as client:
        throttle = client.app[LOGIN_THROTTLE]
        body = json.dumps({"username": user.username, "password": PASSWORD})
        with structlog.testing.capture_logs() as logs:
            await _send_and_hang_up(
                client,
                "POST /api/auth-token/ HTTP/1.1\r\nHost: test\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}",
                # Its body read and its password being checked.
                once=lambda: throttle.tracked_keys() > 0,
            )
            line = await _logged(logs, "request")
        assert (line["route"], line["status"]) == ("/api/auth-token/", 499)
        assert "client_disconnected" not in {e["event"] for e in logs}
        logins = _counted(await (await client.get("/metrics")).text(), "/api/auth-token/")
    assert any('status="499"' in count for count in logins), logins
    assert not any('status="200"' in count for count in logins), logins
