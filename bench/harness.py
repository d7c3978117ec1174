"""The benchmark's machinery, shared by bench/bench.py and tests/bench/test_bench_smoke.py.

* databases: a seeded template (agents with tokens, tickets) cloned per run, so every system
  and every connection count starts from the same rows;
* servers: ours (`tickets serve`) or the baseline (`python -m bench.baseline`) as child
  processes on a loopback port, readiness by polling a real fetch, stopped by their own PID;
* measurements read from the database (sales in a window, the dispatcher's batches from
  ticket_events) and from /proc (CPU time of the server, of PostgreSQL, of the load generator);
* the integrity checks run after each run.

Nothing here changes the product: it only starts it and reads what it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from web.auth import key_digest

REPO = Path(__file__).resolve().parent.parent
FETCH_PATH = "/api/tickets/fetch_tickets/"
SELL_PATH = "/api/tickets/sell_tickets/"
SYSTEMS = ("ours", "baseline")
# Not an argon2 hash of anything: bench users never log in with a password, only tokens.
_NO_PASSWORD = "!bench-no-password"


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_database(dsn: str, database: str) -> str:
    return str(URL(dsn).with_path(f"/{database}"))


# ---------------------------------------------------------------- databases


@dataclass
class Template:
    """A seeded database to clone from; `tokens[i]` belongs to `agent_ids[i]`."""

    name: str
    tokens: list[str]
    agent_ids: list[int]
    tickets: int
    seed_s: dict[str, float] = field(default_factory=dict)


async def admin(server_dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(server_dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def preallocate_wal(server_dsn: str, *, megabytes: int) -> None:
    """Leave `megabytes` of WAL segments recycled and ready, as a long-running server has.

    A fresh cluster has a few; once a run has used them, every 16 MB of WAL needs a new
    zero-filled file, and the commit that creates it waits for that. Switching segments
    creates them; the checkpoint then keeps them for reuse (up to min_wal_size)."""
    # A switch needs some WAL since the last one: one row is enough.
    switch = ("INSERT INTO bench_wal_warmup VALUES (1)", "SELECT pg_switch_wal()")
    await admin(
        server_dsn,
        "CREATE TABLE IF NOT EXISTS bench_wal_warmup (n int)",
        *(statement for _ in range(megabytes // 16 + 1) for statement in switch),
        "DROP TABLE bench_wal_warmup",
        "CHECKPOINT",
    )


async def create_database(server_dsn: str, name: str, *, template: str | None = None) -> str:
    """A new database (a FILE_COPY clone of `template` when given); returns its DSN."""
    clause = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
    await admin(
        server_dsn,
        f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
        f"CREATE DATABASE {name}{clause}",
    )
    return with_database(server_dsn, name)


async def analyze(dsn: str, table: str) -> None:
    await admin(dsn, f"ANALYZE {table}")


async def drop_database(server_dsn: str, name: str) -> None:
    await admin(server_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def seed(
    dsn: str,
    *,
    agents: int,
    tickets: int,
    capacity: int = 15,
    held_per_agent: int = 0,
) -> tuple[list[str], list[int], dict[str, float]]:
    """Add `agents` agents (with a token each) and `tickets` tickets, and optionally hand the
    oldest `agents * held_per_agent` tickets to the agents round-robin (as if the dispatcher
    had: the held tickets are a prefix). Returns (tokens, agent ids, seconds per step)."""
    timings: dict[str, float] = {}
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        tag = secrets.token_hex(4)
        users = await connection.fetch(
            "INSERT INTO users (username, email, password_hash)"
            " SELECT 'bench-' || $1 || '-' || n, '', $2 FROM generate_series(1, $3) AS n"
            " RETURNING id",
            tag,
            _NO_PASSWORD,
            agents,
        )
        user_ids = sorted(row["id"] for row in users)
        tokens = [secrets.token_urlsafe(32) for _ in user_ids]
        await connection.execute(
            "INSERT INTO api_tokens (user_id, key_sha256)"
            " SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            user_ids,
            [key_digest(token) for token in tokens],
        )
        rows = await connection.fetch(
            "INSERT INTO agents (user_id, capacity) SELECT unnest($1::bigint[]), $2"
            " RETURNING id, user_id",
            user_ids,
            capacity,
        )
        agent_of_user = {row["user_id"]: row["id"] for row in rows}
        agent_ids = [agent_of_user[user] for user in user_ids]
        timings["agents_s"] = time.perf_counter() - started

        started = time.perf_counter()
        await connection.execute(
            "INSERT INTO tickets (title, description)"
            " SELECT 'ticket ' || n, 'about ticket ' || n FROM generate_series(1, $1) AS n",
            tickets,
        )
        timings["tickets_s"] = time.perf_counter() - started

        if held_per_agent:
            started = time.perf_counter()
            await connection.execute(
                "WITH a AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k"
                "           FROM agents WHERE id = ANY($1::bigint[])),"
                "     t AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k"
                "           FROM tickets WHERE status = 'unassigned' ORDER BY id LIMIT $2)"
                " UPDATE tickets SET status = 'assigned', agent_id = a.id, assigned_at = now()"
                " FROM t JOIN a ON a.k = t.k % $3 WHERE tickets.id = t.id",
                agent_ids,
                agents * held_per_agent,
                agents,
            )
            timings["held_s"] = time.perf_counter() - started

        started = time.perf_counter()
        # Both systems start from vacuumed, analysed tables with fresh statistics.
        for table in ("users", "api_tokens", "agents", "tickets"):
            await connection.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum_s"] = time.perf_counter() - started
    finally:
        await connection.close()
    return tokens, agent_ids, timings


async def make_template(
    server_dsn: str,
    name: str,
    *,
    migrated_template: str,
    agents: int,
    tickets: int,
    capacity: int = 15,
    held_per_agent: int = 0,
) -> Template:
    """A seeded database, cloned from an already migrated one, to clone runs from."""
    dsn = await create_database(server_dsn, name, template=migrated_template)
    tokens, agent_ids, timings = await seed(
        dsn, agents=agents, tickets=tickets, capacity=capacity, held_per_agent=held_per_agent
    )
    return Template(name, tokens, agent_ids, tickets, timings)


# ---------------------------------------------------------------- /proc


async def communicate_within(
    process: asyncio.subprocess.Process, deadline_s: float
) -> tuple[bytes, bytes]:
    """Wait for a child's output, killing it (our own child, by its handle) if the deadline
    passes or the bench is interrupted."""
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), deadline_s)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    return stdout or b"", stderr or b""


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), steal included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of `root` and its direct children (PostgreSQL's postmaster and backends)."""
    found = {root: cpu_seconds(root)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) == root:
            found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is in the dev environment
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def postmaster_pid(dsn: str) -> int | None:
    """The server's postmaster, when it runs on this machine (the parent of our backend)."""
    connection = await asyncpg.connect(dsn)
    try:
        # Read while the backend lives: it exits when the connection closes.
        parent = _parent(int(await connection.fetchval("SELECT pg_backend_pid()")))
    finally:
        await connection.close()
    return parent if parent and parent > 1 else None


class CpuMeter:
    """CPU seconds used between `start()` and `stop()` by: a server process (by PID), the load
    generator (`load="children"`: a child such as wrk that has exited and been waited for by
    `stop()`; `load="self"`: this very process), and PostgreSQL (postmaster and children)."""

    def __init__(
        self, *, server: int | None = None, load: str | None = None, postmaster: int | None = None
    ) -> None:
        self._server = server
        self._load = load
        self._postmaster = postmaster
        self._before: dict[str, Any] = {}
        self._started = 0.0
        self.result: dict[str, float] = {}

    def _read(self) -> dict[str, Any]:
        now: dict[str, Any] = {"machine": machine_busy_seconds()}
        if self._server:
            now["server"] = cpu_seconds(self._server)
        if self._load:
            who = resource.RUSAGE_CHILDREN if self._load == "children" else resource.RUSAGE_SELF
            usage = resource.getrusage(who)
            now["load"] = usage.ru_utime + usage.ru_stime
        if self._postmaster:
            now["postgres"] = process_tree_cpu(self._postmaster)
        return now

    def start(self) -> None:
        self._started = time.perf_counter()
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._started
        after = self._read()
        result: dict[str, float] = {"wall_s": round(wall, 3)}
        for name in ("server", "load"):
            if name in after:
                result[f"{name}_cpu_s"] = round(after[name] - self._before.get(name, 0.0), 3)
        if "postgres" in after:
            before = self._before.get("postgres", {})
            used = sum(cpu - before.get(pid, 0.0) for pid, cpu in after["postgres"].items())
            result["postgres_cpu_s"] = round(used, 3)
        busy = after["machine"] - self._before["machine"]
        ours = sum(result.get(f"{name}_cpu_s", 0.0) for name in ("server", "load", "postgres"))
        result["machine_busy_cpu_s"] = round(busy, 3)
        # Anything else running on the machine meanwhile (other test runs, the kernel).
        result["other_cpu_s"] = round(max(0.0, busy - ours), 3)
        result["machine_cores"] = os.cpu_count() or 0
        self.result = result
        return result


# ---------------------------------------------------------------- servers


def server_command(system: str, port: int) -> list[str]:
    if system == "ours":
        script = Path(sys.executable).parent / "tickets"
        serve = [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]
        return [*serve, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if system == "baseline":
        return [sys.executable, "-m", "bench.baseline", "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(f"unknown system {system!r}")


def sample_key(name: str, labels: dict[str, str]) -> str:
    """A sample's name with its labels, as the exposition format writes it."""
    if not labels:
        return name
    pairs = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{pairs}}}"


@dataclass
class Server:
    """A server child process; stopped only through its own PID."""

    system: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    spawned_wall: float
    spawned: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        system: str,
        *,
        database_url: str,
        port: int,
        log_path: Path,
        log_level: str = "warning",
        env: dict[str, str] | None = None,
    ) -> Server:
        environment = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_LEVEL": log_level,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        log_file = log_path.open("wb")
        try:
            spawned_wall, spawned = time.time(), time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *server_command(system, port),
                cwd=REPO,
                env=environment,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        finally:
            log_file.close()
        return cls(system, port, process, log_path, spawned_wall, spawned)

    async def wait_ready(self, token: str, *, timeout_s: float = 60.0) -> dict[str, float]:
        """Poll a real fetch (every 20 ms) until it answers 200. Returns seconds from spawn to
        the first HTTP answer of any status and to the first 200. Raises RuntimeError when the
        process exits or the deadline passes."""
        deadline = time.perf_counter() + timeout_s
        first_answer: float | None = None
        headers = {"Authorization": f"Token {token}"}
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.perf_counter() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"{self.system} exited with {self.process.returncode}; see {self.log_path}"
                    )
                try:
                    async with session.post(self.url + FETCH_PATH, headers=headers) as response:
                        await response.read()
                        now = time.perf_counter()
                        if first_answer is None:
                            first_answer = now
                        if response.status == 200:
                            return {
                                "first_http_s": round(first_answer - self.spawned, 3),
                                "ready_s": round(now - self.spawned, 3),
                            }
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(0.02)
        raise RuntimeError(f"{self.system} was not ready in {timeout_s} s; see {self.log_path}")

    async def metric_values(self, names: Sequence[str]) -> dict[str, float]:
        """The current value of each sample named in `names`, from /metrics (those the
        server does not expose are left out: the baseline has no /metrics). A labelled
        sample is named as the exposition format writes it: `name{le="0.05"}`."""
        wanted = set(names)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(self.url + "/metrics") as response,
        ):
            if response.status != 200:
                return {}
            text = await response.text()
        values = {
            sample_key(sample.name, sample.labels): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        return {name: value for name, value in values.items() if name in wanted}

    def log_event_time(self, event: str) -> float | None:
        """Seconds from spawn to the first JSON log line with this event (its own timestamp)."""
        import json

        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' not in line:
                continue
            with contextlib.suppress(ValueError, KeyError):
                record = json.loads(line)
                if record.get("event") == event:
                    at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
                    return round(at.timestamp() - self.spawned_wall, 3)
        return None

    def rss(self) -> int:
        return rss_bytes(self.pid)

    async def stop(self, *, timeout_s: float = 15.0) -> int | None:
        """SIGTERM this PID, wait, SIGKILL it if it does not exit in time."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode


# ---------------------------------------------------------------- reading the results


async def db_now(dsn: str) -> datetime:
    connection = await asyncpg.connect(dsn)
    try:
        value: datetime = await connection.fetchval("SELECT clock_timestamp()")
        return value
    finally:
        await connection.close()


def _percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[index])


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "count": len(values),
        "mean": round(sum(values) / len(values), 2),
        "p50": _percentile(values, 50),
        "p99": _percentile(values, 99),
        "max": float(max(values)),
    }


async def window_counts(dsn: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Sales and assignments committed with a timestamp in [start, end), from the database,
    and the write batches seen in ticket_events over that window: per (epoch, batch), rows
    (state changes per commit) and distinct (agent, event) pairs (commands with an effect)."""
    connection = await asyncpg.connect(dsn)
    try:
        sold = await connection.fetchval(
            "SELECT count(*) FROM tickets WHERE status = 'sold' AND sold_at >= $1 AND sold_at < $2",
            start,
            end,
        )
        sold_total = await connection.fetchval("SELECT count(*) FROM tickets WHERE status = 'sold'")
        assigned = await connection.fetchval(
            "SELECT count(*) FROM ticket_events WHERE event = 'assigned' AND at >= $1 AND at < $2",
            start,
            end,
        )
        batches = await connection.fetch(
            "SELECT epoch, batch, count(*) AS rows,"
            "       count(DISTINCT (agent_id, event)) AS commands"
            " FROM ticket_events WHERE at >= $1 AND at < $2 GROUP BY epoch, batch",
            start,
            end,
        )
    finally:
        await connection.close()
    return {
        "sold": int(sold),
        "sold_total": int(sold_total),
        "assigned": int(assigned),
        "batches": len(batches),
        "batch_rows": summary([b["rows"] for b in batches]),
        "batch_commands": summary([b["commands"] for b in batches]),
    }


async def integrity(dsn: str) -> dict[str, Any]:
    """The checks run after every run. `ok` covers what both systems must guarantee; the
    order checks are reported separately (the baseline does not promise them)."""
    connection = await asyncpg.connect(dsn)
    try:
        # Fresh statistics first: the template's say nothing is sold, and on them the planner
        # ran the anti-join below as a nested loop over the whole log (minutes, not seconds).
        await connection.execute("ANALYZE tickets, ticket_event_groups")
        assigned_twice = await connection.fetchval(
            "SELECT count(*) FROM (SELECT ticket_id FROM ticket_events WHERE event = 'assigned'"
            " GROUP BY ticket_id HAVING count(*) > 1) AS x"
        )
        two_agents = await connection.fetchval(
            "SELECT count(*) FROM (SELECT ticket_id FROM ticket_events"
            " WHERE agent_id IS NOT NULL GROUP BY ticket_id"
            " HAVING count(DISTINCT agent_id) > 1) AS x"
        )
        # A held or sold ticket's row must name the agent its assignment event names.
        row_disagrees = await connection.fetchval(
            "SELECT count(*) FROM tickets t"
            " LEFT JOIN ticket_events e ON e.ticket_id = t.id AND e.event = 'assigned'"
            " WHERE t.status <> 'unassigned' AND e.agent_id IS DISTINCT FROM t.agent_id"
        )
        sold_unlogged = await connection.fetchval(
            "SELECT count(*) FROM tickets t WHERE t.status = 'sold' AND NOT EXISTS"
            " (SELECT 1 FROM ticket_events e WHERE e.ticket_id = t.id AND e.event = 'sold')"
        )
        over_capacity = await connection.fetchval(
            "SELECT count(*) FROM (SELECT a.id FROM agents a JOIN tickets t ON t.agent_id = a.id"
            " AND t.status = 'assigned' GROUP BY a.id, a.capacity"
            " HAVING count(*) > a.capacity) AS x"
        )
        left, last_left = await connection.fetchrow(
            "SELECT count(*), max(id) FROM tickets WHERE status <> 'unassigned'"
        )
        gaps = await connection.fetchval(
            "SELECT count(*) FROM tickets WHERE status = 'unassigned' AND id < $1", last_left or 0
        )
        # Hand-out order across commits: every batch's (or transaction's) assigned ids lie
        # above the previous one's, in the order the batches were numbered.
        out_of_order = await connection.fetchval(
            "SELECT count(*) FROM (SELECT min(ticket_id) AS low,"
            "  lag(max(ticket_id)) OVER (ORDER BY epoch, batch) AS previous_high"
            "  FROM ticket_events WHERE event = 'assigned' GROUP BY epoch, batch) AS x"
            " WHERE low < previous_high"
        )
    finally:
        await connection.close()
    checks = {
        "assigned_twice": int(assigned_twice),
        "two_agents": int(two_agents),
        "row_disagrees_with_events": int(row_disagrees),
        "sold_unlogged": int(sold_unlogged),
        "over_capacity": int(over_capacity),
    }
    return {
        **checks,
        "ok": not any(checks.values()),
        "left_queue": int(left),
        "unassigned_below_last_left": int(gaps),
        "prefix_ok": gaps == 0,
        "batches_out_of_order": int(out_of_order),
    }


# ---------------------------------------------------------------- diagnostics


async def enable_auto_explain(server_dsn: str, database: str, *, slower_than_ms: float) -> None:
    """Log the plan (with actual rows and times) of every statement on `database` slower than
    the threshold, for connections opened from now on. Diagnostic only: instrumenting every
    statement costs time, so runs with it are not comparable with runs without."""
    settings = {
        "session_preload_libraries": "auto_explain",
        "auto_explain.log_min_duration": f"{slower_than_ms:g}ms",
        "auto_explain.log_analyze": "on",
        "auto_explain.log_buffers": "on",
        "auto_explain.log_nested_statements": "on",
        "auto_explain.log_parameter_max_length": "0",
    }
    await admin(
        server_dsn,
        *(f"ALTER DATABASE {database} SET {key} = '{value}'" for key, value in settings.items()),
    )


def file_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_DURATION = re.compile(r"duration: ([0-9.]+) ms\s+plan:")


def slow_plans(log_path: Path, *, since_offset: int) -> dict[str, Any]:
    """The auto_explain entries written to the server log after `since_offset`: per statement
    (its first line), how many, their total and worst duration, and the worst one's plan."""
    with log_path.open("rb") as log:
        log.seek(since_offset)
        text = log.read().decode(errors="replace")
    entries: list[tuple[float, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _LOG_LINE.match(line):
            match = _DURATION.search(line)
            current = [] if match else None
            if match and current is not None:
                entries.append((float(match.group(1)), current))
        elif current is not None and "Query Parameters:" not in line:
            current.append(line.strip("\t").rstrip())
    statements: dict[str, dict[str, Any]] = {}
    for duration, lines in entries:
        query = next((line for line in lines if line.startswith("Query Text:")), "?")
        key = " ".join(query.removeprefix("Query Text:").split())[:80]
        entry = statements.setdefault(key, {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
        entry["count"] += 1
        entry["total_ms"] = round(entry["total_ms"] + duration, 1)
        if duration >= entry["max_ms"]:
            entry["max_ms"] = duration
            start = next((i for i, line in enumerate(lines) if "(cost=" in line), 0)
            entry["worst_plan"] = lines[start:]
    return {"slow_statements": statements, "count": len(entries)}
