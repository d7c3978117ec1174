"""`tickets createsuperuser` and `tickets create-agent`: the accounts an install starts with.

createsuperuser behaves like Django's: it prompts for what the options did not give and
asks again after a blank, taken or invalid answer; with --noinput it takes the password
from $TICKETS_SUPERUSER_PASSWORD. The rules for usernames, emails and passwords are the
API's (web.schemas), and the password is hashed by the API's own PasswordHasher with the
argon2 parameters from Settings, so the API verifies it without a rehash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from cli.support import Invalid, load_settings, open_database, run
from config.settings import Settings
from web.schemas import Email, Password, Username

PASSWORD_ENV = "TICKETS_SUPERUSER_PASSWORD"
# Keep in sync with the CHECK on agents.capacity; 15 is the column's default.
CAPACITY_RANGE = click.IntRange(0, 1000)
DEFAULT_CAPACITY = 15

_USERNAME: TypeAdapter[str] = TypeAdapter(Username)
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_PASSWORD: TypeAdapter[str] = TypeAdapter(Password)


def _check(adapter: TypeAdapter[str], value: str, explain: Callable[[dict[str, Any]], str]) -> str:
    """The value when the API's rule accepts it; Invalid with a readable reason otherwise."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise Invalid(explain(dict(exc.errors()[0]))) from exc


def _username_problem(error: dict[str, Any]) -> str:
    if error["type"] == "string_too_short":
        return "This field cannot be blank."
    if error["type"] == "string_too_long":
        return f"Ensure the username has at most {error['ctx']['max_length']} characters."
    return "Enter a valid username: letters, digits and @ . + - _ only."


def _email_problem(error: dict[str, Any]) -> str:
    if error["type"] == "string_too_long":
        return f"Ensure the email address has at most {error['ctx']['max_length']} characters."
    return "Enter a valid email address."


def _password_problem(error: dict[str, Any]) -> str:
    if error["type"] == "string_too_short":
        minimum = error["ctx"]["min_length"]
        return f"This password is too short. It must contain at least {minimum} characters."
    maximum = error["ctx"]["max_length"]
    return f"This password is too long. It must contain at most {maximum} characters."


def check_username(value: str) -> str:
    return _check(_USERNAME, value, _username_problem)


def check_email(value: str) -> str:
    return _check(_EMAIL, value, _email_problem)


def check_password(value: str) -> str:
    if not value:
        raise Invalid("Blank passwords aren't allowed.")
    return _check(_PASSWORD, value, _password_problem)


_TAKEN = "That username is already taken."


@click.command()
@click.option("--username", help="Login name (letters, digits and @ . + - _).")
@click.option("--email", help="Email address (may be left blank).")
@click.option(
    "--noinput",
    "--no-input",
    "noinput",
    is_flag=True,
    help=f"Ask nothing: needs --username, and the password in ${PASSWORD_ENV}.",
)
def createsuperuser(username: str | None, email: str | None, noinput: bool) -> None:
    """Create a staff user that can administer the service.

    Prompts for the username, email address and password (twice) unless --noinput is given.
    Exits with 1 when the username is taken or a value is refused.
    """
    settings = load_settings()
    if username is not None:
        username = check_username(username)
    if email is not None:
        email = check_email(email)
    if noinput:
        if username is None:
            raise Invalid("--username is required with --noinput.")
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise Invalid(f"--noinput takes the password from ${PASSWORD_ENV}, which is not set.")
        run(_create(settings, username, email or "", check_password(password), ask=False))
    else:
        run(_create(settings, username, email, None, ask=True))
    click.echo("Superuser created successfully.")


async def _create(
    settings: Settings, username: str | None, email: str | None, password: str | None, *, ask: bool
) -> None:
    from storage.errors import Conflict
    from web.passwords import PasswordHasher

    # Connect before prompting: an unreachable database fails before anyone types a password.
    async with open_database(settings) as database:
        if username is not None and await database.fetchval("users_username_taken", username):
            raise Invalid(_TAKEN)
        if ask:
            while username is None:
                username = _ask(check_username, "Username")
                if await database.fetchval("users_username_taken", username):
                    click.echo(f"Error: {_TAKEN}", err=True)
                    username = None
            if email is None:
                email = _ask(check_email, "Email address")
            password = _ask_password()
        assert password is not None and email is not None
        hasher = PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            concurrency=1,
        )
        try:
            password_hash = await hasher.hash(password)
        finally:
            hasher.close()
        try:
            await database.fetchrow("users_insert", username, email, password_hash, True)
        except Conflict as exc:  # taken between the check and now
            raise Invalid(_TAKEN) from exc


def _ask(check: Callable[[str], str], label: str) -> str:
    """Prompt until `check` accepts the answer; blank answers reach `check` too."""
    while True:
        answer = click.prompt(label, default="", show_default=False)
        try:
            return check(answer)
        except Invalid as exc:
            click.echo(f"Error: {exc.message}", err=True)


def _ask_password() -> str:
    while True:
        password = click.prompt("Password", hide_input=True, default="", show_default=False)
        again = click.prompt("Password (again)", hide_input=True, default="", show_default=False)
        if password != again:
            click.echo("Error: Your passwords didn't match.", err=True)
            continue
        try:
            return check_password(password)
        except Invalid as exc:
            click.echo(f"Error: {exc.message}", err=True)


@click.command("create-agent")
@click.argument("username")
@click.option(
    "--capacity",
    type=CAPACITY_RANGE,
    default=DEFAULT_CAPACITY,
    show_default=True,
    help="How many tickets the agent may hold at once.",
)
def create_agent(username: str, capacity: int) -> None:
    """Make the existing user USERNAME an agent, who is then handed tickets.

    Exits with 1 when there is no such user or it is already an agent.
    """
    settings = load_settings()
    agent = run(_create_agent(settings, username, capacity))
    click.echo(
        f"{username} is now an agent (agent id {agent['id']}, capacity {agent['capacity']})."
    )


async def _create_agent(settings: Settings, username: str, capacity: int) -> dict[str, Any]:
    from storage.errors import Conflict

    async with open_database(settings) as database:
        try:
            agent = await database.fetchrow("agents_insert_by_username", username, capacity)
        except Conflict as exc:
            raise Invalid(f"{username!r} is already an agent.") from exc
    if agent is None:
        raise Invalid(f"There is no user named {username!r}.")
    return agent
