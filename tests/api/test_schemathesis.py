"""Schemathesis against a real server, every check on: whatever `OPERATIONS` holds is fuzzed.

The server is this test's own `create_app(settings)` on an ephemeral 127.0.0.1 port, served
from the test's event loop (on the test's fresh database); the `st` CLI runs in a subprocess
against `/api/schema/`, once with an admin's token and once with an agent's, both made by the
`make` factory and sent as a header. Any failed check fails the test: a 5xx, a response the
document does not describe (status, headers, content type, body), valid data refused, invalid
data accepted, a wrong answer to an undeclared method, an operation that ignores a missing or
bad token. The server's own count of 5xx answers is asserted separately.

- In the suite: a quick run, a few examples per operation, all phases, a fixed seed.
- `FUZZ_LONG=1` (`make fuzz`): at least 5,000 requests over both runs, a fresh seed each time
  (printed; `FUZZ_SEED=<n>` replays a run).

Bounds: the subprocess has a hard deadline. Schemathesis only knows the server's 127.0.0.1
address, its proxy variables point at a closed local port (a request to any other host would
fail the run rather than leave the machine), and its HAR log is checked for other hosts.

The fuzzer's own identity is kept out of its reach: triggers skip deleting its token, user and
agent, and taking away its role. A fuzzer that revokes its own token or deactivates itself
tests nothing but 401s afterwards; those paths have their own tests.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp import web

from config.settings import Settings
from tests.support.factories import Actor, Factory

LONG = os.environ.get("FUZZ_LONG") == "1"
# The long run's floor, over both roles together: each role makes at least half.
LONG_TOTAL_REQUESTS = 5_000
# Per operation, generation mode and phase: about 150 requests per operation in all.
LONG_MAX_EXAMPLES = 150
QUICK_MAX_EXAMPLES = 5
QUICK_SEED = 20_240_601
# Hard deadlines for the subprocess: a quick run takes about 10 s, a long one a minute or two.
QUICK_DEADLINE_S = 120
LONG_DEADLINE_S = 900
ST = Path(sys.executable).with_name("st")

# The whole configuration of a run: `--config-file` keeps any schemathesis.toml in the
# working tree from being discovered.
CONFIG = """\
[generation]
database = "none"

# A body over the size limit is refused with 413 before it is read, whatever it holds.
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "409", "413", "415", "429"]

# A well-formed login with credentials that do not exist is a 400 (`invalid_credentials`),
# by design; everywhere else, valid requests must be accepted.
[[operations]]
include-operation-id = "obtain_token"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "429"]

# An agent for a user id that does not exist is a 400 naming `user` (the contract), and one
# for a user who is an agent already is a 409.
[[operations]]
include-operation-id = "create_agent"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "409"{refused}]
"""

# As an agent, valid requests to admin-only operations are refused (403), other users'
# objects are out of sight (404), and selling tickets one does not hold is a 409: the
# permission matrix (test_permissions.py) and tests/dispatch pin which. A new password of
# one's own with a wrong current_password is a 403, and after five of them a 429 (the
# login throttle): the fuzzer cannot know the password.
AGENT_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "403", "404", "409", "429"]
"""


def config_for(*, agent: bool) -> str:
    # Only an admin may create agents; for the agent the 403 is the right answer.
    return CONFIG.replace("{refused}", ', "403"' if agent else "") + (AGENT_CONFIG if agent else "")


# Triggers that keep the fuzzer's identity alive, created in the test's own database.
_KEEP_IDENTITY = """
CREATE FUNCTION fuzz_keep_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;  -- skip this row: the statement goes on as if it had not matched it
END;
$$;
CREATE TRIGGER fuzz_keep_tokens BEFORE DELETE ON api_tokens FOR EACH ROW
    WHEN (OLD.user_id = ANY (fuzz_identity())) EXECUTE FUNCTION fuzz_keep_identity();
CREATE TRIGGER fuzz_keep_users BEFORE DELETE ON users FOR EACH ROW
    WHEN (OLD.id = ANY (fuzz_identity())) EXECUTE FUNCTION fuzz_keep_identity();
CREATE TRIGGER fuzz_keep_user_roles BEFORE UPDATE ON users FOR EACH ROW
    WHEN (OLD.id = ANY (fuzz_identity())
          AND (NEW.is_active, NEW.is_staff) IS DISTINCT FROM (OLD.is_active, OLD.is_staff))
    EXECUTE FUNCTION fuzz_keep_identity();
CREATE TRIGGER fuzz_keep_agents BEFORE DELETE ON agents FOR EACH ROW
    WHEN (OLD.user_id = ANY (fuzz_identity())) EXECUTE FUNCTION fuzz_keep_identity();
CREATE TRIGGER fuzz_keep_agent_roles BEFORE UPDATE ON agents FOR EACH ROW
    WHEN (OLD.user_id = ANY (fuzz_identity())
          AND (NEW.is_active, NEW.user_id) IS DISTINCT FROM (OLD.is_active, OLD.user_id))
    EXECUTE FUNCTION fuzz_keep_identity();
"""


async def keep_identity(db: asyncpg.Connection, *actors: Actor) -> None:
    ids = ",".join(str(int(actor.user_id)) for actor in actors)
    await db.execute(
        "CREATE FUNCTION fuzz_identity() RETURNS bigint[] IMMUTABLE LANGUAGE sql"
        f" AS 'SELECT ARRAY[{ids}]::bigint[]'"
    )
    await db.execute(_KEEP_IDENTITY)


async def arrange(make: Factory) -> None:
    """Some of everything, so listings have pages and ids point at rows in every state:
    a plain user, an idle agent, and an agent holding some tickets and having sold others
    (written before the server starts, so its dispatcher loads them)."""
    await make.user()
    await make.agent(capacity=3)
    holder = await make.agent(capacity=5)
    tickets = await make.tickets(30)
    await make.db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY ($2::bigint[])",
        holder.agent_id,
        tickets[:3],
    )
    await make.db.execute(
        "UPDATE tickets SET status = 'sold', agent_id = $1, assigned_at = now(), sold_at = now()"
        " WHERE id = ANY ($2::bigint[])",
        holder.agent_id,
        tickets[3:5],
    )


@dataclass
class Traffic:
    """What the server answered, recorded server-side as each response is prepared."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)

    async def record(self, request: web.Request, response: web.StreamResponse) -> None:
        self.statuses[response.status] += 1
        if response.status >= 500:
            self.server_errors.append(f"{request.method} {request.path_qs} -> {response.status}")

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def serve(settings: Settings, traffic: Traffic) -> tuple[web.AppRunner, str]:
    from web.app import create_app

    app = create_app(settings)
    app.on_response_prepare.append(traffic.record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass
class Run:
    returncode: int
    output: str
    seed: int
    requests: int
    hosts: set[str]


async def run_schemathesis(
    base_url: str, token: str, workdir: Path, *, seed: int, extra_config: str
) -> Run:
    config = workdir / "schemathesis.toml"
    config.write_text(extra_config)
    har = workdir / "requests.har"
    command = [
        str(ST),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base_url}/api/schema/",
        "--checks",
        "all",
        "--header",
        f"Authorization: Token {token}",
        "--max-examples",
        str(LONG_MAX_EXAMPLES if LONG else QUICK_MAX_EXAMPLES),
        "--seed",
        str(seed),
        "--request-timeout",
        "10",
        # One worker: CPython 3.11's ast.parse is not thread-safe (gh-106905), and hypothesis
        # parses lambdas' source while describing strategies.
        "--workers",
        "1",
        *(["--continue-on-failure"] if LONG else []),
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--report-dir",
        str(workdir / "reports"),
    ]
    dead_end = "http://127.0.0.1:9"  # the discard port: nothing listens, nothing leaves
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env |= {
        "HTTP_PROXY": dead_end,
        "HTTPS_PROXY": dead_end,
        "ALL_PROXY": dead_end,
        "NO_PROXY": "127.0.0.1",
        "COLUMNS": "120",
    }
    deadline_s = LONG_DEADLINE_S if LONG else QUICK_DEADLINE_S
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=deadline_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis overran its deadline of {deadline_s} s (seed {seed})")
    (workdir / "output.txt").write_bytes(output)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    return Run(
        returncode=process.returncode if process.returncode is not None else -1,
        output=output.decode(errors="replace"),
        seed=seed,
        requests=len(entries),
        hosts={urlsplit(entry["request"]["url"]).hostname or "" for entry in entries},
    )


async def fuzz(settings: Settings, actor: Actor, workdir: Path) -> None:
    seed = int(os.environ.get("FUZZ_SEED") or (random.randrange(2**32) if LONG else QUICK_SEED))
    traffic = Traffic()
    runner, base_url = await serve(settings, traffic)
    try:
        run = await run_schemathesis(
            base_url,
            actor.token,
            workdir,
            seed=seed,
            extra_config=config_for(agent=actor.agent_id is not None),
        )
    finally:
        await runner.cleanup()
    print(
        f"\nschemathesis seed={seed}: {run.requests} requests,"
        f" statuses {dict(sorted(traffic.statuses.items()))}; output in {workdir / 'output.txt'}"
    )
    assert run.hosts <= {"127.0.0.1"}, f"requests left the loopback address: {run.hosts}"
    problems = []
    if traffic.server_errors:
        problems.append("The server answered 5xx:\n" + "\n".join(traffic.server_errors[:50]))
    if run.returncode != 0:
        problems.append(
            f"schemathesis failed (seed {seed}; whole report in {workdir / 'output.txt'}):\n"
            + _failures(run.output)
        )
    assert not problems, "\n\n".join(problems)
    assert run.requests > 0
    assert traffic.total >= run.requests
    if LONG:
        assert run.requests >= LONG_TOTAL_REQUESTS // 2


def _failures(output: str) -> str:
    """The report's failures and summary, with the long lines (huge bodies) cut."""
    start = output.find("=== FAILURES ===")
    text = output[output.rfind("\n", 0, start) + 1 :] if start >= 0 else output[-20_000:]
    return "\n".join(line if len(line) <= 500 else line[:500] + " …" for line in text.splitlines())


TIMEOUT_S = LONG_DEADLINE_S + 120 if LONG else QUICK_DEADLINE_S + 60


@pytest.mark.timeout(TIMEOUT_S)
async def test_schemathesis_as_admin(settings, make, db, tmp_path) -> None:
    admin = await make.admin()
    await arrange(make)
    await keep_identity(db, admin)
    await fuzz(settings, admin, tmp_path)


@pytest.mark.timeout(TIMEOUT_S)
async def test_schemathesis_as_agent(settings, make, db, tmp_path) -> None:
    agent = await make.agent()
    await arrange(make)
    await keep_identity(db, agent)
    await fuzz(settings, agent, tmp_path)
