"""An unexpected failure is a JSON 500 that leaks nothing, and is logged with its request id."""

from __future__ import annotations

import structlog


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
