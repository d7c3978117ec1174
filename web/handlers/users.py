"""Users: admins manage everyone; every user may read itself and change its own email and password.

Who gets which refusal (the same rule in users.py, agents.py and tickets.py):

* 401: no valid token.
* 404: the caller may not see the object at all, so it is answered as if it did not exist.
  Plain users (no agent, or a deactivated one) see only themselves.
* 403: the caller can see the object but may not do this to it. Active agents may list every
  user, so another user's record is 403 to them, not 404; and a user may not delete itself nor
  change its own username, is_staff or is_active.

A field sent with the value it already has is not a change: a user may PUT its own record
back with only the email or password different. Passwords are hashed with argon2id off the
event loop, and are never returned or logged. Users changing their own password confirm the
current one (`current_password`, throttled like a login): a token alone, perhaps a leaked
one, must not be enough to lock the owner out. A new password revokes the user's tokens, all
but the one that changed it; deactivation revokes them all. Nothing takes away the last
active admin: demoting, deactivating or deleting it is a 409. Deactivating an agent's user
gives its tickets back and stops its fetches; reactivated, its user logs in again and the
agent trades again (if the agent is active).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from storage.database import Database, Transaction
from storage.errors import Conflict as StorageConflict
from web.auth import Principal, request_key_digest, require_admin, require_admin_or_agent
from web.errors import Conflict, NotFound, PermissionDenied
from web.handlers.agents import delete_agent_through_dispatcher
from web.handlers.auth import check_password
from web.keys import AUTHENTICATOR, DATABASE, DISPATCHER, PASSWORDS
from web.pagination import page
from web.routing import Operation, json_response, parse_body, parse_query, path_id, principal
from web.schemas import Page, PageQuery, User, UserCreate, UserReplace, UserUpdate

log = structlog.get_logger(__name__)

# What a user may change on its own record; everything else is for admins.
SELF_EDITABLE = frozenset({"email", "password"})
_USERNAME_TAKEN = "A user with that username already exists."


async def create_user(request: web.Request) -> web.Response:
    caller = await principal(request)
    require_admin(caller)
    body = await parse_body(request, UserCreate)
    password_hash = await request.app[PASSWORDS].hash(body.password)
    try:
        row = await request.app[DATABASE].fetchrow(
            "users_insert", body.username, body.email, password_hash, body.is_staff
        )
    except StorageConflict:
        raise Conflict(_USERNAME_TAKEN) from None
    assert row is not None
    log.info("user_created", user_id=row["id"], is_staff=row["is_staff"], by=caller.user_id)
    return json_response(User.model_validate(row), status=201)


async def list_users(request: web.Request) -> web.Response:
    caller = await principal(request)
    require_admin_or_agent(caller)
    query = parse_query(request, PageQuery)
    database = request.app[DATABASE]
    count = await database.fetchval("users_count")
    rows = await database.fetch("users_page", query.limit, query.offset, query.after or 0)
    return json_response(page(request, query, count, [User.model_validate(row) for row in rows]))


@contextlib.asynccontextmanager
async def _user_write(
    request: web.Request, user_id: int, may_remove_admin: bool, *, transaction: bool = False
) -> AsyncIterator[Database | Transaction]:
    """Where to write a change to `user_id`: in a transaction when `transaction` is asked
    for, or when the change may take away an active admin (it clears is_staff or is_active,
    or deletes). Such a change is refused (409) when the user is an active admin and no
    other one remains: without one, nobody could manage users or agents through the API.
    Both are judged under the lock, not on the handler's earlier read: meanwhile another
    request may have made this user the last active admin."""
    database = request.app[DATABASE]
    if not (may_remove_admin or transaction):
        yield database
        return
    async with database.transaction() as writing:
        if may_remove_admin:
            await writing.fetchval("users_admin_removal_lock")
            if (
                await writing.fetchval("users_is_active_admin", user_id)
                and await writing.fetchval("users_other_active_admins_count", user_id) == 0
            ):
                raise Conflict("This is the last active admin; make another admin first.")
        yield writing


async def _visible_user(request: web.Request, caller: Principal) -> dict[str, Any]:
    """The user in the path, if the caller may see it (404 otherwise) and act on it (403)."""
    user_id = path_id(request)
    if not (caller.is_admin or caller.is_agent or user_id == caller.user_id):
        raise NotFound()
    row = await request.app[DATABASE].fetchrow("users_by_id", user_id)
    if row is None:
        raise NotFound()
    if not (caller.is_admin or user_id == caller.user_id):
        raise PermissionDenied("Only admins may read or change other users.")
    return row


async def read_user(request: web.Request) -> web.Response:
    row = await _visible_user(request, await principal(request))
    return json_response(User.model_validate(row))


async def _update_user(request: web.Request, kind: type[UserReplace | UserUpdate]) -> web.Response:
    caller = await principal(request)
    current = await _visible_user(request, caller)
    body = await parse_body(request, kind)
    changes = body.model_dump(exclude_unset=True)
    confirmation = changes.pop("current_password", None)
    if caller.user_id == current["id"] and changes.get("password") is not None:
        await _confirm_password(request, current["username"], confirmation)
    if not caller.is_admin:
        refused = sorted(
            name
            for name, value in changes.items()
            if name not in SELF_EDITABLE and value != current[name]
        )
        if refused:
            raise PermissionDenied(
                f"Only admins may change {', '.join(refused)}; "
                "you may change your own email and password."
            )
        changes = {name: value for name, value in changes.items() if name in SELF_EDITABLE}
    password = changes.get("password")
    password_hash = await request.app[PASSWORDS].hash(password) if password is not None else None
    # A new password revokes the user's other tokens (a leaked one is the usual reason to
    # change it); the token changing its own password stays, so that client stays signed in.
    # Deactivation revokes every one: reactivating a compromised account must not bring its
    # old sessions back.
    deactivates = changes.get("is_active") is False
    revokes = password_hash is not None or deactivates
    token_kept = (
        request_key_digest(request) if caller.user_id == current["id"] and not deactivates else None
    )
    may_remove_admin = False in (changes.get("is_staff"), changes.get("is_active"))
    try:
        async with _user_write(
            request, current["id"], may_remove_admin, transaction=revokes
        ) as database:
            row = await database.fetchrow(
                "users_update",
                current["id"],
                changes.get("username"),
                changes.get("email"),
                password_hash,
                changes.get("is_staff"),
                changes.get("is_active"),
            )
            if row is not None and revokes:
                await database.execute("api_tokens_revoke_for_user", row["id"], token_kept)
    except StorageConflict:
        raise Conflict(_USERNAME_TAKEN) from None
    if row is None:
        raise NotFound()
    if password_hash is not None:
        # This process drops the revoked keys now; the others within the cache's TTL.
        request.app[AUTHENTICATOR].forget_all()
    # Field names only: values (a password above all) stay out of the logs.
    log.info("user_updated", user_id=row["id"], fields=sorted(changes), by=caller.user_id)
    roles_changed = (
        row["is_active"] != current["is_active"] or row["is_staff"] != current["is_staff"]
    )
    if roles_changed:
        request.app[AUTHENTICATOR].forget_user(row["id"])
    if current["agent_id"] is not None and roles_changed:
        # An agent trades only while its user is active and no admin (otherwise its tickets
        # would wait forever with someone who cannot fetch or sell). The leader learns this
        # from the database whichever server made the change; when this one leads, it
        # applies it before answering, so no fetch answered after this response hands the
        # agent a ticket.
        await request.app[DISPATCHER].agent_changed(current["agent_id"])
    return json_response(User.model_validate(row))


async def _confirm_password(request: web.Request, username: str, given: str | None) -> None:
    """The caller knows the password it is replacing: checked as a login is, and throttled
    with the logins of this username and address, so it is no way round their limit."""
    # 403, not 400: the request is well formed; the caller has not shown it may do this.
    if given is None:
        raise PermissionDenied("Send your current password (current_password) to change it.")
    if await check_password(request, username, given) is None:
        raise PermissionDenied("current_password is not your current password.")


async def replace_user(request: web.Request) -> web.Response:
    return await _update_user(request, UserReplace)


async def update_user(request: web.Request) -> web.Response:
    return await _update_user(request, UserUpdate)


async def delete_user(request: web.Request) -> web.Response:
    """An agent's user loses its agent first, through the dispatcher (409 while it holds or
    has sold tickets); the user's tokens go with it."""
    caller = await principal(request)
    row = await _visible_user(request, caller)
    if not caller.is_admin:
        raise PermissionDenied("Only admins may delete users.")
    # The agent goes inside, so that a refusal to remove the last admin leaves it untouched.
    # Any user: one read as a plain user may have been made the last admin since.
    async with _user_write(request, row["id"], may_remove_admin=True) as database:
        if row["agent_id"] is not None:
            await delete_agent_through_dispatcher(request, row["agent_id"])
        if await database.fetchval("users_delete", row["id"]) is None:
            raise NotFound()
    request.app[AUTHENTICATOR].forget_user(row["id"])
    log.info("user_deleted", user_id=row["id"], agent_id=row["agent_id"], by=caller.user_id)
    return web.Response(status=204)


_USER = "/api/users/{id}/"

OPERATIONS = [
    Operation(
        "POST",
        "/api/users/",
        create_user,
        summary="Create a user (admins)",
        tag="users",
        body=UserCreate,
        responses={201: User},
    ),
    Operation(
        "GET",
        "/api/users/",
        list_users,
        summary="List users in id order (admins and agents)",
        tag="users",
        query=PageQuery,
        responses={200: Page[User]},
    ),
    Operation(
        "GET",
        _USER,
        read_user,
        summary="Read a user (admins, or the user itself)",
        tag="users",
        responses={200: User},
    ),
    Operation(
        "PUT",
        _USER,
        replace_user,
        summary="Replace a user's fields (admins; a user may change its own email and password)",
        description=(
            "A new password revokes the user's other tokens (all of them when an admin sets"
            " it). Deactivating an agent's user gives the agent's tickets back and stops its"
            " fetches. 409 for a username that is taken, or for demoting or deactivating the"
            " last active admin."
        ),
        tag="users",
        body=UserReplace,
        responses={200: User},
    ),
    Operation(
        "PATCH",
        _USER,
        update_user,
        summary="Change some of a user's fields (admins; a user its own email and password)",
        description=(
            "A new password revokes the user's other tokens (all of them when an admin sets"
            " it). Deactivating an agent's user gives the agent's tickets back and stops its"
            " fetches. 409 for a username that is taken, or for demoting or deactivating the"
            " last active admin."
        ),
        tag="users",
        body=UserUpdate,
        responses={200: User},
    ),
    Operation(
        "DELETE",
        _USER,
        delete_user,
        summary="Delete a user, and its agent if it has one (admins)",
        description=(
            "409 while its agent holds or has sold tickets (deactivate the agent instead), or"
            " when it is the last active admin."
        ),
        tag="users",
        responses={204: None},
    ),
]
