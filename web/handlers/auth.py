"""Obtaining and revoking API tokens."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.auth import key_digest, new_key, request_key_digest
from web.errors import ApiError, TooManyRequests
from web.keys import AUTHENTICATOR, DATABASE, LOGIN_THROTTLE, PASSWORDS
from web.middleware import USER_ID
from web.ratelimit import Outcome
from web.routing import Operation, json_response, parse_body, principal
from web.schemas import TokenRequest, TokenResponse


class InvalidCredentials(ApiError):
    """Unable to log in with the provided credentials."""

    status, code = 400, "invalid_credentials"


async def check_password(
    request: web.Request, username: str, password: str
) -> dict[str, Any] | None:
    """The active user `username` if `password` is theirs, else None; checked as every
    password is: throttled per (username, address) and per address (429), and unknown
    users taking the time a wrong password takes."""
    throttle = request.app[LOGIN_THROTTLE]
    address = request.remote or "unknown"
    wait_s = await throttle.admit(username, address)
    if wait_s:
        raise TooManyRequests(headers={"Retry-After": str(wait_s)})
    outcome: Outcome = "unchecked"
    try:
        user = await request.app[DATABASE].fetchrow("users_credentials_by_username", username)
        matches = await request.app[PASSWORDS].verify(
            user["password_hash"] if user else None, password
        )
        outcome = "succeeded" if user and matches and user["is_active"] else "failed"
    finally:
        throttle.finished(username, address, outcome)
    return user if outcome == "succeeded" else None


async def obtain_token(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenRequest)
    user = await check_password(request, body.username, body.password)
    if user is None:
        raise InvalidCredentials()
    database = request.app[DATABASE]
    passwords = request.app[PASSWORDS]
    checked = user["password_hash"]
    if passwords.needs_rehash(checked):
        rehashed = await passwords.hash(body.password)
        if await database.fetchval("users_password_hash_update", user["id"], rehashed, checked):
            checked = rehashed
    key = new_key()
    # Issued only if the password checked is still the user's, and the user still active:
    # a change of either while this login ran revokes every token it could have issued.
    if await database.fetchval("api_tokens_insert", user["id"], key_digest(key), checked) is None:
        raise InvalidCredentials()
    request[USER_ID] = user["id"]
    return json_response(TokenResponse(token=key))


async def revoke_token(request: web.Request) -> web.Response:
    await principal(request)
    digest = request_key_digest(request)
    await request.app[DATABASE].execute("api_tokens_delete_by_hash", digest)
    request.app[AUTHENTICATOR].forget(digest)
    return web.Response(status=204)


OPERATIONS = [
    Operation(
        "POST",
        "/api/auth-token/",
        obtain_token,
        summary="Exchange a username and password for an API token",
        tag="auth",
        body=TokenRequest,
        responses={200: TokenResponse},
        auth=False,
    ),
    Operation(
        "DELETE",
        "/api/auth-token/",
        revoke_token,
        summary="Revoke the token this request is authenticated with",
        tag="auth",
        responses={204: None},
    ),
]
