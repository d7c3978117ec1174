from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from tests.support.factories import PASSWORD
from web.keys import PASSWORDS


async def test_login_returns_a_token_that_authenticates(client, make, db):
    user = await make.user(username="alice")
    response = await client.post(
        "/api/auth-token/", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status == 200
    token = (await response.json())["token"]
    assert len(token) >= 43
    stored = await db.fetch("SELECT key_sha256 FROM api_tokens WHERE user_id = $1", user.user_id)
    assert hashlib.sha256(token.encode()).digest() in {row["key_sha256"] for row in stored}
    revoke = await client.delete("/api/auth-token/", headers={"Authorization": f"Bearer {token}"})
    assert revoke.status == 204


async def test_wrong_password_and_unknown_user_look_the_same(client, make):
    await make.user(username="bob")
    wrong = await client.post("/api/auth-token/", json={"username": "bob", "password": "nope-nope"})
    unknown = await client.post(
        "/api/auth-token/", json={"username": "nobody", "password": "nope-nope"}
    )
    assert wrong.status == unknown.status == 400
    assert await wrong.json() == await unknown.json()


async def test_every_401_names_the_scheme_that_would_do(client, make):
    """RFC 9110: a 401 carries WWW-Authenticate, whether the credentials are missing,
    malformed or no longer valid."""
    user = await make.user()
    cases = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Token not-a-real-key"},
    ]
    for headers in cases:
        response = await client.get(f"/api/users/{user.user_id}/", headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"] == 'Token realm="api"'
        assert (await response.json())["error"] == "not_authenticated"
    assert (await client.get(f"/api/users/{user.user_id}/", headers=user.headers)).status == 200


async def _raw_request(client, head: bytes) -> tuple[int, bytes]:
    """One request written byte for byte (HTTP clients refuse to send these headers)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "credentials",
    [b"Token \xe9\xe9", b"Bearer k\xc3\xa9y", b"Token \xff\xfe\x00"[:-1]],
    ids=["latin-1 bytes", "utf-8 non-ascii", "invalid utf-8"],
)
@pytest.mark.parametrize(
    "method, path", [(b"GET", b"/api/tickets/"), (b"DELETE", b"/api/auth-token/")]
)
async def test_a_key_that_is_not_ascii_is_no_key(client, credentials, method, path):
    """Keys are ASCII; other bytes once reached the digest's encode() and answered 500."""
    status, body = await _raw_request(
        client,
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + credentials
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert status == 401, body
    assert json.loads(body)["error"] == "not_authenticated"


async def test_answers_are_never_cached_or_sniffed(client, make):
    """A token response, and every answer with private data, is for its client only."""
    user = await make.user(username="lee")
    responses = [
        await client.post("/api/auth-token/", json={"username": "lee", "password": PASSWORD}),
        await client.get(f"/api/users/{user.user_id}/", headers=user.headers),
        await client.get("/api/users/"),  # an error too
    ]
    assert [r.status for r in responses] == [200, 200, 401]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


NEW_PASSWORD = "a brand new passphrase"


async def _login(client, username: str, password: str):
    return await client.post("/api/auth-token/", json={"username": username, "password": password})


async def test_a_login_rehashing_the_old_password_cannot_undo_a_change(client, make, monkeypatch):
    """A login that re-hashes on stronger settings wrote the OLD password's new hash over a
    password changed while it hashed: the owner's 200 was undone (a tester did it 3 in 6)."""
    owner = await make.user(username="rhea")
    hasher = client.app[PASSWORDS]
    real_hash = hasher.hash
    rehashing, may_finish = asyncio.Event(), asyncio.Event()

    async def slow_rehash_of_the_old_password(password: str) -> str:
        if password == PASSWORD:  # the login's re-hash; the change hashes the new one
            rehashing.set()
            await may_finish.wait()
        return await real_hash(password)

    monkeypatch.setattr(hasher, "needs_rehash", lambda stored: True)
    monkeypatch.setattr(hasher, "hash", slow_rehash_of_the_old_password)
    login = asyncio.create_task(_login(client, "rhea", PASSWORD))
    await asyncio.wait_for(rehashing.wait(), 10)
    changed = await client.patch(
        f"/api/users/{owner.user_id}/",
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
        headers=owner.headers,
    )
    assert changed.status == 200, await changed.text()
    may_finish.set()

    assert (await asyncio.wait_for(login, 10)).status == 400  # its password is gone
    monkeypatch.setattr(hasher, "hash", real_hash)
    assert (await _login(client, "rhea", NEW_PASSWORD)).status == 200
    assert (await _login(client, "rhea", PASSWORD)).status == 400


@pytest.mark.parametrize("change", ["deactivated", "password changed"])
async def test_a_login_in_flight_across_a_revocation_issues_no_token(
    client, make, db, monkeypatch, change
):
    """A login that checked the password before the change and stored its token after it
    kept a working token: revocation had already run (a tester: 20 of 20)."""
    user = await make.user(username="ivo")
    admin = await make.admin()
    hasher = client.app[PASSWORDS]
    real_verify = hasher.verify
    verified, may_finish = asyncio.Event(), asyncio.Event()

    async def verify_then_wait(stored, given):
        matches = await real_verify(stored, given)
        verified.set()
        await may_finish.wait()
        return matches

    monkeypatch.setattr(hasher, "verify", verify_then_wait)
    login = asyncio.create_task(_login(client, "ivo", PASSWORD))
    await asyncio.wait_for(verified.wait(), 10)
    body = {"is_active": False} if change == "deactivated" else {"password": NEW_PASSWORD}
    response = await client.patch(f"/api/users/{user.user_id}/", json=body, headers=admin.headers)
    assert response.status == 200, await response.text()
    may_finish.set()

    assert (await asyncio.wait_for(login, 10)).status == 400
    assert (
        await db.fetchval("SELECT count(*) FROM api_tokens WHERE user_id = $1", user.user_id) == 0
    )
