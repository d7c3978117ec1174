"""What `tickets serve` writes: one JSON object per line on stdout when stdout is not a
terminal (LOG_FORMAT unset), with an access line per request; no secret ever appears."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.deploy.conftest import START_TIMEOUT_S, Started, serve
from tests.support.factories import PASSWORD, Factory
from tests.support.servers import FETCH, Server

LOGIN = "/api/auth-token/"
WRONG_PASSWORD = "not-the-password-but-still-secret"


async def call(
    http: aiohttp.ClientSession, server: Server, path: str, **kwargs: object
) -> tuple[int, dict[str, str], object]:
    async with http.post(server.url + path, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, dict(response.headers), await response.json(content_type=None)


@pytest.mark.slow
async def test_logs_are_json_lines_with_request_context_and_no_secrets(
    started: Started, tmp_path: Path, database_url: str, make: Factory
) -> None:
    agent = await make.agent(username="logged")
    server = serve(started, tmp_path, database_url, "s1")  # LOG_FORMAT unset: stdout is a file
    async with aiohttp.ClientSession() as http:
        await server.wait_ready(http, agent.headers, want="leader", timeout_s=START_TIMEOUT_S)

        status, _, body = await call(
            http, server, LOGIN, json={"username": "logged", "password": PASSWORD}
        )
        assert status == 200, body
        assert isinstance(body, dict)
        token = str(body["token"])
        wrong_status, _, _ = await call(
            http, server, LOGIN, json={"username": "logged", "password": WRONG_PASSWORD}
        )
        assert wrong_status in (400, 401)
        status, _, _ = await call(
            http, server, LOGIN, json={"username": "logged", "password": "x" * 129}
        )  # refused by validation: the error must not be logged with its input
        assert status == 400

        offered = {"Authorization": f"Token {token}", "X-Request-ID": "deploy-test-42"}
        status, headers, _ = await call(http, server, FETCH, headers=offered)
        assert status == 200
        assert headers["X-Request-ID"] == "deploy-test-42"
        status, headers, _ = await call(
            http, server, FETCH, headers={**agent.headers, "X-Request-ID": "has spaces; and more"}
        )
        assert status == 200
        generated = headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)

    server.send(signal.SIGTERM)
    assert await server.wait_exit(timeout_s=15) == 0, server.stderr_tail()

    stdout = server.log_path.read_text()
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]  # all JSON
    assert all(isinstance(line, dict) for line in lines)
    assert all({"event", "level", "timestamp"} <= line.keys() for line in lines)

    (fetched,) = [e for e in lines if e.get("request_id") == "deploy-test-42"]
    assert fetched["event"] == "request"
    assert fetched["level"] == "info"
    assert fetched["method"] == "POST"
    assert fetched["route"] == FETCH
    assert fetched["status"] == 200
    assert isinstance(fetched["duration_ms"], int | float) and fetched["duration_ms"] >= 0
    assert fetched["user_id"] == agent.user_id
    (replaced,) = [e for e in lines if e.get("request_id") == generated]
    assert replaced["user_id"] == agent.user_id
    logins = [e for e in lines if e.get("event") == "request" and e.get("route") == LOGIN]
    assert sorted(e["status"] for e in logins) == sorted([200, wrong_status, 400])

    (gained,) = [e for e in lines if e["event"] == "leadership_gained"]
    assert gained["level"] == "info"
    assert gained["epoch"] == 1
    assert gained["identity"].endswith(f":{server.pid}:{server.port}")

    everything = stdout + server.stderr_path.read_text()
    for secret in [PASSWORD, WRONG_PASSWORD, "x" * 129, token, agent.token]:
        assert secret not in everything


async def _send_raw(server: Server, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


@pytest.mark.slow
async def test_a_request_that_cannot_be_parsed_is_one_json_line_without_its_bytes(
    started: Started, tmp_path: Path, database_url: str, make: Factory
) -> None:
    """aiohttp's own record of such a request is an error with a traceback quoting the bad
    bytes: anyone could fill the log with tracebacks, and an Authorization header's token."""
    agent = await make.agent(username="parsed")
    server = serve(started, tmp_path, database_url, "s1")
    malformed = [
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Token {agent.token}\x01\r\n\r\n",
        "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + "a" * 9000 + "\r\n\r\n",
        # aiohttp logs this one at debug, not as an error: it once left no line at all.
        f"F@O /healthz?{agent.token} HTTP/1.1\r\nHost: x\r\n\r\n",
        # Answered by the API's JSON 400; aiohttp met the error again while draining the body.
        "POST /api/auth-token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Encoding: gzip\r\nContent-Length: 7\r\n\r\nnotgzip",
    ]
    async with aiohttp.ClientSession() as http:
        await server.wait_ready(http, agent.headers, want="leader", timeout_s=START_TIMEOUT_S)
    for request in malformed:
        assert (await _send_raw(server, request.encode("latin-1"))).startswith(b"HTTP/1.")
    server.send(signal.SIGTERM)
    assert await server.wait_exit(timeout_s=15) == 0, server.stderr_tail()

    stdout = server.log_path.read_text()
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]  # all JSON
    bad = [e for e in lines if e.get("event") == "bad_http_request"]
    assert len(bad) == len(malformed)
    assert all(e["level"] == "info" and e["status"] == 400 for e in bad), bad
    assert all(e.get("error") and "exception" not in e for e in bad), bad
    stderr = server.stderr_path.read_text()
    assert "Traceback" not in stdout + stderr
    assert agent.token not in stdout + stderr
