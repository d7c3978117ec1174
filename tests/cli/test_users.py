"""`tickets createsuperuser` and `tickets create-agent`, end to end on a real database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from argon2 import PasswordHasher
from yarl import URL

from tests.cli.conftest import Tickets, explain
from tests.support.postgres import free_port

PASSWORD = "a long enough passphrase"


async def superuser(db, username: str):
    return await db.fetchrow(
        "SELECT username, email, password_hash, is_staff, is_active FROM users WHERE username = $1",
        username,
    )


async def test_interactive_prompts_again_until_every_answer_is_accepted(
    tickets: Tickets, make, db
) -> None:
    await make.user(username="taken")
    answers = [
        "taken",  # Username: already used
        "",  # blank
        "has space",  # not a valid username
        "root",
        "not-an-email",  # Email address
        "root@example.com",
        "first-password",  # Password / Password (again): mismatch
        "second-password",
        "short",  # too short, twice
        "short",
        "x" * 129,  # too long, twice
        "x" * 129,
        PASSWORD,
        PASSWORD,
    ]
    result = await tickets.invoke("createsuperuser", input="\n".join(answers) + "\n")

    assert result.exit_code == 0, explain(result)
    assert result.stdout.count("Username:") == 4
    assert "Email address:" in result.stdout
    assert result.stdout.count("Password (again):") == 4
    assert "Superuser created successfully." in result.stdout
    for message in [
        "That username is already taken.",
        "This field cannot be blank.",
        "Enter a valid username",
        "Enter a valid email address.",
        "Your passwords didn't match.",
        "This password is too short. It must contain at least 8 characters.",
        "This password is too long. It must contain at most 128 characters.",
    ]:
        assert message in result.stderr
    # Hidden input is never echoed.
    assert PASSWORD not in result.stdout + result.stderr
    row = await superuser(db, "root")
    assert row["email"] == "root@example.com"
    assert row["is_staff"] and row["is_active"]
    # The web layer's argon2id parameters, so logins verify it without a rehash.
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PasswordHasher().verify(row["password_hash"], PASSWORD)


async def test_interactive_blank_email_is_allowed(tickets: Tickets, db) -> None:
    result = await tickets.invoke("createsuperuser", input=f"root\n\n{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, explain(result)
    assert (await superuser(db, "root"))["email"] == ""


async def test_interactive_end_of_input_aborts_with_nothing_created(tickets: Tickets, db) -> None:
    result = await tickets.invoke("createsuperuser", input="root\n")
    assert result.exit_code == 1, explain(result)
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_noinput_takes_the_password_from_the_environment_and_can_log_in(
    tickets: Tickets, db, client
) -> None:
    result = await tickets.run(
        "createsuperuser",
        "--username",
        "admin",
        "--email",
        "admin@example.com",
        "--noinput",
        env={"TICKETS_SUPERUSER_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, explain(result)
    assert "Superuser created successfully." in result.stdout
    row = await superuser(db, "admin")
    assert (row["email"], row["is_staff"]) == ("admin@example.com", True)
    login = await client.post("/api/auth-token/", json={"username": "admin", "password": PASSWORD})
    assert login.status == 200


async def test_noinput_without_the_password_variable_is_refused(tickets: Tickets, db) -> None:
    result = await tickets.run("createsuperuser", "--username", "admin", "--noinput")
    assert result.returncode == 1, explain(result)
    assert "TICKETS_SUPERUSER_PASSWORD" in result.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_noinput_without_a_username_is_refused(tickets: Tickets) -> None:
    result = await tickets.invoke(
        "createsuperuser", "--noinput", env={"TICKETS_SUPERUSER_PASSWORD": PASSWORD}
    )
    assert result.exit_code == 1, explain(result)
    assert "--username is required" in result.stderr


async def test_a_taken_username_is_refused(tickets: Tickets, make, db) -> None:
    await make.user(username="admin")
    before = await db.fetchval("SELECT password_hash FROM users WHERE username = 'admin'")
    result = await tickets.invoke(
        "createsuperuser",
        "--username",
        "admin",
        "--noinput",
        env={"TICKETS_SUPERUSER_PASSWORD": PASSWORD},
    )
    assert result.exit_code == 1, explain(result)
    assert "That username is already taken." in result.stderr
    after = await db.fetchval("SELECT password_hash FROM users WHERE username = 'admin'")
    assert after == before


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "Blank passwords aren't allowed."),
        ("seven77", "at least 8 characters"),
        ("x" * 129, "at most 128"),
    ],
)
async def test_a_password_outside_the_rules_is_refused(
    tickets: Tickets, db, password: str, message: str
) -> None:
    result = await tickets.invoke(
        "createsuperuser",
        "--username",
        "admin",
        "--noinput",
        env={"TICKETS_SUPERUSER_PASSWORD": password},
    )
    assert result.exit_code == 1, explain(result)
    assert message in result.stderr
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_password_of_exactly_8_characters_is_accepted(tickets: Tickets, db) -> None:
    result = await tickets.invoke(
        "createsuperuser",
        "--username",
        "admin",
        "--noinput",
        env={"TICKETS_SUPERUSER_PASSWORD": "eight888"},
    )
    assert result.exit_code == 0, explain(result)


async def test_create_agent_makes_a_user_an_agent(tickets: Tickets, make, db) -> None:
    user = await make.user(username="alice")
    result = await tickets.run("create-agent", "alice")
    assert result.returncode == 0, explain(result)
    assert "alice is now an agent" in result.stdout
    row = await db.fetchrow(
        "SELECT capacity, is_active FROM agents WHERE user_id = $1", user.user_id
    )
    assert (row["capacity"], row["is_active"]) == (15, True)


@pytest.mark.parametrize("capacity", [0, 40, 1000])
async def test_create_agent_takes_a_capacity(tickets: Tickets, make, db, capacity: int) -> None:
    await make.user(username="alice")
    result = await tickets.invoke("create-agent", "alice", "--capacity", str(capacity))
    assert result.exit_code == 0, explain(result)
    assert await db.fetchval("SELECT capacity FROM agents") == capacity


async def test_create_agent_refuses_an_unknown_user(tickets: Tickets, db) -> None:
    result = await tickets.run("create-agent", "nobody")
    assert result.returncode == 1, explain(result)
    assert "There is no user named 'nobody'." in result.stderr
    assert await db.fetchval("SELECT count(*) FROM agents") == 0


async def test_create_agent_refuses_a_user_that_already_is_one(tickets: Tickets, make, db) -> None:
    await make.agent(username="alice", capacity=3)
    result = await tickets.invoke("create-agent", "alice", "--capacity", "9")
    assert result.exit_code == 1, explain(result)
    assert "'alice' is already an agent." in result.stderr
    assert await db.fetchval("SELECT capacity FROM agents") == 3


@pytest.mark.parametrize("capacity", ["-1", "1001", "many"])
async def test_create_agent_refuses_a_capacity_out_of_range(
    tickets: Tickets, make, db, capacity: str
) -> None:
    await make.user(username="alice")
    result = await tickets.invoke("create-agent", "alice", "--capacity", capacity)
    assert result.exit_code == 1, explain(result)
    assert "--capacity" in result.stderr
    assert await db.fetchval("SELECT count(*) FROM agents") == 0


async def test_usage_errors_exit_with_1(tickets: Tickets) -> None:
    missing = await tickets.run("create-agent")
    assert missing.returncode == 1, explain(missing)
    assert "Missing argument 'USERNAME'" in missing.stderr
    unknown = await tickets.invoke("no-such-command")
    assert unknown.exit_code == 1, explain(unknown)


@pytest.mark.parametrize("command", ["createsuperuser", "create-agent", "import-tickets"])
async def test_every_command_has_help(tickets: Tickets, command: str) -> None:
    result = await tickets.invoke(command, "--help")
    assert result.exit_code == 0, explain(result)
    assert f"Usage: tickets {command}" in result.stdout


async def test_an_unreachable_database_exits_with_2(tickets: Tickets) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = await tickets.run("create-agent", "alice", env={"DATABASE_URL": closed})
    assert result.returncode == 2, explain(result)
    assert "database unavailable" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("refused", "named"),
    [
        (lambda url: url.with_path("/no_such_database"), "no_such_database"),
        (lambda url: url.with_user("no_such_role"), "no_such_role"),
    ],
    ids=["unknown database", "unknown role"],
)
@pytest.mark.parametrize("command", [("create-agent", "alice"), ("stats",), ("migrate",)])
async def test_a_database_url_the_server_refuses_exits_with_2_in_one_line(
    tickets: Tickets,
    database_url: str,
    refused: Callable[[URL], URL],
    named: str,
    command: tuple[str, ...],
) -> None:
    """The server answers but refuses the login: the operator reads which name is wrong."""
    result = await tickets.run(*command, env={"DATABASE_URL": str(refused(URL(database_url)))})
    assert result.returncode == 2, explain(result)
    assert "database unavailable" in result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
