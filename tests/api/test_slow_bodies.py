"""A body that never finishes arriving is answered 408 within BODY_READ_TIMEOUT_S and its
connection closed: it once held the connection and its handler for ever, unauthenticated."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from aiohttp.test_utils import TestClient

from tests.support.in_process import AppServer
from web.app import create_app
from web.keys import DISPATCHER

DEADLINE_S = 15  # seconds; far above the timeout below, only reached when something is broken
LOGIN = "/api/auth-token/"
HEAD = f"POST {LOGIN} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"

# Each request is sent in parts, a pause between them; none of them ever ends its body.
STALLED = {
    # Content-Length promises more than ever comes.
    "a body shorter than its Content-Length": [HEAD + "Content-Length: 1000\r\n\r\n{"],
    # aiohttp's parser stops at the bad chunk size and never ends the body it was reading.
    "a bad chunk size mid-body": [
        HEAD + 'Transfer-Encoding: chunked\r\n\r\n5\r\n{"tic\r\n',
        "zz\r\nkkk\r\n0\r\n\r\n",
    ],
}


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The response's head and body, or empty ones if the server closed without answering."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b"", b""
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


@pytest.mark.parametrize("parts", list(STALLED.values()), ids=list(STALLED))
async def test_a_body_that_never_ends_is_answered_408_in_time(settings, parts):
    server = AppServer(create_app(settings.model_copy(update={"body_read_timeout_s": 1.0})))
    async with TestClient(server) as client:
        await asyncio.wait_for(client.app[DISPATCHER].leading.wait(), DEADLINE_S)
        with structlog.testing.capture_logs() as logs:
            reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
            try:
                for part in parts:
                    writer.write(part.encode())
                    await writer.drain()
                    await asyncio.sleep(0.1)
                head, body = await asyncio.wait_for(_answer(reader), DEADLINE_S)
            finally:
                writer.close()
        assert head.startswith(b"HTTP/1.1 408 "), head
        # The connection ends too, once aiohttp has drained what the client still sends
        # (for up to its lingering time, 10 s, not waited for here).
        assert b"\r\nConnection: close\r\n" in head, head
        assert json.loads(body)["error"] == "request_timeout"
        events = {e["event"]: e for e in logs}
        assert "unhandled_error" not in events, logs
        assert events["body_read_timeout"]["log_level"] == "info"
        assert events["body_read_timeout"]["path"] == LOGIN
        assert events["request"]["status"] == 408
        metrics = await (await client.get("/metrics")).text()
    logins = [line for line in metrics.splitlines() if f'route="{LOGIN}"' in line]
    assert any('status="408"' in line for line in logins), logins
