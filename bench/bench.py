"""`make bench`: the real server over HTTP on real PostgreSQL, against a baseline, in one run.

Parts (all by default; pick with --parts):

* http — for each connection count and each system (ours: `tickets serve`; the baseline:
  `python -m bench.baseline`, one transaction per request with SKIP LOCKED), a fresh clone
  of one seeded template, a warm-up, then wrk drives fetch -> sell cycles with one agent per
  connection for --duration seconds. Reported: requests/s, tickets sold/s (counted in the
  database over the window), latency percentiles, errors, CPU split, write batch sizes (from
  ticket_events), and the integrity checks; then the ratios ours/baseline.
* dispatcher — the dispatcher alone, in-process, no HTTP: thousands of agent tasks calling
  `Dispatcher.fetch` / `sell`; state changes committed per second beside a plain COPY of the
  same number of rows into a scratch table of the same database.
* startup — `tickets serve` on 1,000,000 unassigned tickets and 10,000 agents holding some:
  time to lead and to answer a fetch, and the process's RSS.
* profile (only when asked) — one more `ours` run with py-spy attached; where the time goes.

Everything runs on one private PostgreSQL cluster (tests/support/postgres.py) on a loopback
port, torn down at the end. Every loop is bounded in time; only processes this command
started are stopped, each by its PID. Results: a Markdown summary on stdout, raw JSON in
bench/results/<timestamp>.json, server logs in bench/results/<timestamp>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bench import profile as profiling
from bench.dispatcher_only import copy_rate, run_dispatcher_only
from bench.harness import (
    SYSTEMS,
    CpuMeter,
    Server,
    Template,
    admin,
    analyze,
    create_database,
    db_now,
    drop_database,
    enable_auto_explain,
    file_size,
    integrity,
    make_template,
    postmaster_pid,
    preallocate_wal,
    sample_key,
    say,
    slow_plans,
    window_counts,
    with_database,
)
from bench.load import drive_aiohttp, drive_wrk, wrk_path
from bench.rounds import by_system_and_connections, comparisons, run_order
from bench.startup import run_startup
from cli import runtime
from config.logs import configure as configure_logging
from storage.migrate import migrate
from tests.support.postgres import Cluster, free_port

RESULTS = Path(__file__).parent / "results"
PARTS = ("http", "dispatcher", "startup", "profile")
DEFAULT_PARTS = ("http", "dispatcher", "startup")

# What we aim for on the 2-core machine (see the README's Performance section).
TARGET_SOLD_RATIO = 5.0
TARGET_P99_MS = 50.0
TARGET_STATE_CHANGES_PER_S = 100_000
TARGET_READY_S = 3.0
TARGET_RSS_MB = 300.0


# ---------------------------------------------------------------- one HTTP run


# The dispatcher's own account of its commits: a batch's time runs from sending its statement
# to having its result back in the actor (round trip and event-loop wait included).
COMMIT_HISTOGRAM = "ticketsystem_dispatcher_batch_commit_duration_seconds"
COMMIT_SECONDS = f"{COMMIT_HISTOGRAM}_sum"
COMMIT_COUNT = f"{COMMIT_HISTOGRAM}_count"
# Commits within 50 ms (a bucket of the same histogram). The rest are stalls of the write
# path: each holds up every waiter of its batch and of the batch behind it, and a few per
# round are enough to carry p99 over the 50 ms target on their own, whatever the
# throughput. Telling the two causes of a p99 miss apart needs this count.
# The bound must be one of the histogram's buckets (web/metrics.py, COMMIT_SECONDS_BUCKETS).
SLOW_COMMIT_MS = 50
COMMITS_WITHIN_SLOW = sample_key(f"{COMMIT_HISTOGRAM}_bucket", {"le": str(SLOW_COMMIT_MS / 1000)})
COMMIT_METRICS = (COMMIT_SECONDS, COMMIT_COUNT, COMMITS_WITHIN_SLOW)


def _commit_share(
    before: dict[str, float], after: dict[str, float], cpu: dict[str, Any]
) -> dict[str, float] | None:
    """How busy the leader's one connection was with batch commits over the window: the
    share of wall time, and the mean commit. None for a server without a dispatcher."""
    if not all(name in before and name in after for name in COMMIT_METRICS):
        return None
    seconds = after[COMMIT_SECONDS] - before[COMMIT_SECONDS]
    count = after[COMMIT_COUNT] - before[COMMIT_COUNT]
    within = after[COMMITS_WITHIN_SLOW] - before[COMMITS_WITHIN_SLOW]
    return {
        "busy_share": round(seconds / cpu["wall_s"], 3),
        "commits_per_s": round(count / cpu["wall_s"], 1),
        "mean_commit_ms": round(seconds / count * 1000, 2) if count else 0.0,
        "slow_commits": int(count - within),
    }


def _slow_commits(commits: dict[str, Any]) -> str:
    """Runs saved before the count existed say so instead of showing a zero."""
    slow = commits.get("slow_commits")
    return "–" if slow is None else f"{slow:,}"


async def run_http(
    *,
    server_dsn: str,
    template: Template,
    tokens_file: Path,
    system: str,
    connections: int,
    duration_s: float,
    warmup_s: float,
    threads: int,
    driver: str,
    workdir: Path,
    postmaster: int | None,
    profile_to: Path | None = None,
    analyze_after_warmup: bool = False,
    explain_slower_than_ms: float | None = None,
    server_log: Path | None = None,
    round_no: int = 1,
) -> dict[str, Any]:
    """One system at one connection count on a fresh clone of `template`.

    `analyze_after_warmup` runs ANALYZE on tickets between the warm-up and the measurement
    (the statistics then know that tickets are held and sold, as autovacuum's would in a
    steady state); `explain_slower_than_ms` logs slow plans with auto_explain and returns
    them (diagnostic: the instrumentation slows the run).
    """
    if connections > len(template.tokens):
        raise ValueError(
            f"{connections} connections need as many agents; have {len(template.tokens)}"
        )
    name = f"bench_{system}_{connections}_{secrets.token_hex(3)}"
    dsn = await create_database(server_dsn, name, template=template.name)
    tokens = template.tokens[:connections]
    server: Server | None = None
    explained: dict[str, Any] | None = None
    if explain_slower_than_ms is not None:
        await enable_auto_explain(server_dsn, name, slower_than_ms=explain_slower_than_ms)
    log_offset = file_size(server_log)
    try:
        server = await Server.start(
            system, database_url=dsn, port=free_port(), log_path=workdir / f"{name}.log"
        )
        ready = await server.wait_ready(tokens[0])

        async def drive(seconds: float) -> dict[str, Any]:
            if driver == "wrk":
                return await drive_wrk(
                    server.url,
                    tokens_file,
                    connections=connections,
                    threads=threads,
                    duration_s=seconds,
                )
            return await drive_aiohttp(server.url, tokens, duration_s=seconds)

        if warmup_s > 0:
            await drive(warmup_s)
        if analyze_after_warmup:
            await analyze(dsn, "tickets")
        meter = CpuMeter(
            server=server.pid,
            load="children" if driver == "wrk" else "self",
            postmaster=postmaster,
        )
        spy = None
        if profile_to is not None:
            spy = asyncio.create_task(
                profiling.record(server.pid, duration_s=duration_s, output=profile_to)
            )
        commits_before = await server.metric_values(COMMIT_METRICS)
        start = await db_now(dsn)
        meter.start()
        load = await drive(duration_s)
        cpu = meter.stop()
        end = await db_now(dsn)
        commits = _commit_share(commits_before, await server.metric_values(COMMIT_METRICS), cpu)
        if spy is not None:
            await spy
        rss_mb = round(server.rss() / 2**20, 1)
        exit_code = await server.stop()
        counts = await window_counts(dsn, start, end)
        checks = await integrity(dsn)
        if explain_slower_than_ms is not None and server_log is not None:
            explained = slow_plans(server_log, since_offset=log_offset)
    finally:
        if server is not None:
            await server.stop()
        await drop_database(server_dsn, name)
    window_s = (end - start).total_seconds()
    load_s = load["duration_us"] / 1e6
    non_2xx = load["fetch_non200"] + load["sell_non200"]
    socket_errors = load["errors_connect"] + load["errors_read"] + load["errors_write"]
    wrk_output = load.pop("wrk_output", None)
    return {
        "system": system,
        "connections": connections,
        "round": round_no,
        "driver": driver,
        "threads": threads if driver == "wrk" else None,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "ready": ready,
        "window_s": round(window_s, 3),
        "requests": load["requests"],
        "requests_per_s": round(load["requests"] / load_s, 1),
        "sold": counts["sold"],
        "sold_per_s": round(counts["sold"] / window_s, 1),
        "sold_by_responses": load["sold_tickets"],
        "latency_ms": {
            key.removeprefix("latency_").removesuffix("_us"): round(float(value) / 1000, 2)
            for key, value in load.items()
            if key.startswith("latency_")
        },
        "errors": {
            "non_2xx": non_2xx,
            "socket": socket_errors,
            "timeout": load["errors_timeout"],
            "total": non_2xx + socket_errors + load["errors_timeout"],
        },
        "starved": load["empty_fetches"] > 0,
        "db": counts,
        "cpu": cpu,
        "leader_commits": commits,
        "rss_mb": rss_mb,
        "exit_code": exit_code,
        "integrity": checks,
        "analyzed_after_warmup": analyze_after_warmup,
        "slow_plans": explained,
        "load": load,
        "wrk_output": wrk_output,
    }


# ---------------------------------------------------------------- the whole command


def _tool_versions(driver: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    if driver == "wrk" and wrk_path():
        probe = subprocess.run(
            [wrk_path() or "wrk", "--version"], capture_output=True, text=True, check=False
        )
        versions["wrk"] = (probe.stdout or probe.stderr).splitlines()[0].strip()
    return versions


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = args.results / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "parts": sorted(parts),
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "machine": {"cores": os.cpu_count(), **_tool_versions(args.driver)},
        "http": [],
    }
    if args.driver == "wrk" and "http" in parts | {"profile"} and wrk_path() is None:
        raise SystemExit(
            "wrk is not installed: run bench/run.sh (it installs it), or --driver aiohttp"
        )
    if "profile" in parts and profiling.find_py_spy() is None:
        raise SystemExit("--parts profile needs py-spy: pip install --target /tmp/py-spy py-spy")

    say(f"starting a private PostgreSQL cluster; logs and raw data in {workdir}")
    cluster = Cluster(max_connections=400)
    cluster.start()
    try:
        server_dsn = cluster.dsn()
        # WAL sized for a write-heavy server, as README recommends; both systems run on it.
        # max_wal_size: with the 1 GB default, at these write rates PostgreSQL itself logs
        # "checkpoints are occurring too frequently". min_wal_size: checkpoints keep old
        # segments for reuse, as a busy server's do; with the 80 MB default every run soon
        # creates fresh 16 MB segments, and the commit that zero-fills one waits ~55 ms
        # (every 0.5 s at these rates: the whole of ours' p99 at 100 connections).
        await admin(
            server_dsn,
            "ALTER SYSTEM SET max_wal_size = '8GB'",
            "ALTER SYSTEM SET min_wal_size = '2GB'",
            "ALTER SYSTEM SET log_checkpoints = on",
            "ALTER SYSTEM SET log_autovacuum_min_duration = 0",
            "SELECT pg_reload_conf()",
        )
        await preallocate_wal(server_dsn, megabytes=2048)
        postmaster = await postmaster_pid(server_dsn)
        results["machine"]["postgres"] = await _server_version(server_dsn)
        migrated = "bench_migrated"
        await create_database(server_dsn, migrated)
        await migrate(with_database(server_dsn, migrated))

        template: Template | None = None
        tokens_file = workdir / "tokens.txt"
        if parts & {"http", "dispatcher", "profile"}:
            agents = max(
                [*args.connections, args.dispatcher_agents if "dispatcher" in parts else 0]
            )
            say(f"seeding the template: {agents:,} agents (capacity 15), {args.tickets:,} tickets")
            template = await make_template(
                server_dsn,
                "bench_seeded",
                migrated_template=migrated,
                agents=agents,
                tickets=args.tickets,
            )
            say(f"seeded in {sum(template.seed_s.values()):.1f} s {template.seed_s}")
            results["template"] = {
                "agents": agents,
                "tickets": args.tickets,
                "seed_s": {k: round(v, 2) for k, v in template.seed_s.items()},
            }
            tokens_file.write_text("\n".join(template.tokens) + "\n")

        if "http" in parts and template is not None:
            for connections in args.connections:
                for round_no, system in run_order(args.systems, args.rounds):
                    say(
                        f"http: {system}, {connections} connections, round {round_no} of"
                        f" {args.rounds}, {args.warmup:g} s warm-up + {args.duration:g} s"
                    )
                    run = await run_http(
                        server_dsn=server_dsn,
                        template=template,
                        tokens_file=tokens_file,
                        system=system,
                        connections=connections,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        threads=args.threads,
                        driver=args.driver,
                        workdir=workdir,
                        postmaster=postmaster,
                        analyze_after_warmup=args.analyze_after_warmup,
                        explain_slower_than_ms=args.explain_slower_than_ms,
                        server_log=cluster.log,
                        round_no=round_no,
                    )
                    say(
                        f"  {run['requests_per_s']:,.0f} req/s, {run['sold_per_s']:,.0f} sold/s,"
                        f" p99 {run['latency_ms'].get('p99', 0):.1f} ms,"
                        f" errors {run['errors']['total']}, integrity"
                        f" {'ok' if run['integrity']['ok'] else 'FAILED'}"
                    )
                    results["http"].append(run)

        if "dispatcher" in parts and template is not None:
            name = f"bench_dispatcher_{secrets.token_hex(3)}"
            dsn = await create_database(server_dsn, name, template=template.name)
            try:
                agent_ids = template.agent_ids[: args.dispatcher_agents]
                say(
                    f"dispatcher only: {len(agent_ids):,} agents in-process,"
                    f" {args.dispatcher_duration:g} s"
                )
                if args.explain_slower_than_ms is not None:
                    await enable_auto_explain(
                        server_dsn, name, slower_than_ms=args.explain_slower_than_ms
                    )
                log_offset = file_size(cluster.log)
                run = await run_dispatcher_only(
                    dsn,
                    agent_ids,
                    duration_s=args.dispatcher_duration,
                    postmaster=postmaster,
                    analyze_after_warmup=args.analyze_after_warmup,
                )
                if args.explain_slower_than_ms is not None:
                    run["slow_plans"] = slow_plans(cluster.log, since_offset=log_offset)
                say(f"  {run['state_changes_per_s']:,.0f} state changes/s; COPY of as many rows")
                run["copy"] = await copy_rate(dsn, run["state_changes"])
                run["ratio_to_copy"] = round(
                    run["state_changes_per_s"] / run["copy"]["rows_per_s"], 3
                )
                say(f"  COPY {run['copy']['rows_per_s']:,.0f} rows/s")
            finally:
                await drop_database(server_dsn, name)
            results["dispatcher"] = run

        if "startup" in parts:
            results["startup"] = await run_startup(
                server_dsn,
                migrated_template=migrated,
                workdir=workdir,
                tickets=args.startup_tickets,
                agents=args.startup_agents,
                held_per_agent=args.startup_held,
            )
            say(
                f"  ready in {results['startup']['ready_s']} s,"
                f" RSS {results['startup']['rss_ready_mb']} MB"
            )

        if "profile" in parts and template is not None:
            connections = args.connections[0]
            raw = workdir / f"py-spy-ours-{connections}.txt"
            say(f"profile: ours, {connections} connections, py-spy for {args.duration:g} s")
            run = await run_http(
                server_dsn=server_dsn,
                template=template,
                tokens_file=tokens_file,
                system="ours",
                connections=connections,
                duration_s=args.duration,
                warmup_s=args.warmup,
                threads=args.threads,
                driver=args.driver,
                workdir=workdir,
                postmaster=postmaster,
                profile_to=raw,
                analyze_after_warmup=args.analyze_after_warmup,
            )
            run["profile"] = profiling.summarise(raw)
            run["profile"]["raw"] = str(raw)
            results["profile"] = run
    finally:
        say("stopping the PostgreSQL cluster")
        # Its log (checkpoints, autovacuum runs) explains a run's latency tail.
        with contextlib.suppress(OSError):
            shutil.copyfile(cluster.log, workdir / "postgres.log")
        cluster.destroy()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["logs"] = str(workdir)
    return results


async def _server_version(dsn: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


# ---------------------------------------------------------------- the report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _cores(cpu: dict[str, float], *names: str) -> str:
    """CPU seconds per wall second (cores busy on average) of each named process group."""
    wall = cpu.get("wall_s") or 1.0
    return " / ".join(f"{cpu.get(f'{name}_cpu_s', 0.0) / wall:.2f}" for name in names)


def _server_us_per_request(run: dict[str, Any]) -> str:
    """The server process's CPU per request: how fast this machine's one core runs the
    service's Python. Ours is bound by it, so it explains a run's throughput where the
    cores column cannot (a slow machine shows as more µs, not as more cores)."""
    requests = run.get("requests") or 0
    server_s = run["cpu"].get("server_cpu_s")
    return "–" if not requests or server_s is None else f"{server_s / requests * 1e6:,.0f}"


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    machine = results["machine"]
    settings = results["settings"]
    out.append(
        f"Measured {results['started']} on {machine['cores']} cores ({machine['machine']}),"
        f" Python {machine['python']}, PostgreSQL {machine.get('postgres', '?')}"
        + (f", {machine['wrk']}" if "wrk" in machine else "")
        + ". The load generator, both servers and PostgreSQL share the same cores."
    )
    runs = results["http"]
    if runs:
        driver = runs[0]["driver"]
        out.append("")
        out.append(
            f"**fetch → sell over HTTP** ({driver}"
            + (f", {runs[0]['threads']} threads" if driver == "wrk" else "")
            + f", one agent of capacity 15 per connection, {settings['warmup']:g} s warm-up,"
            f" {settings['duration']:g} s measured, fresh clone of the same"
            f" {results['template']['tickets']:,}-ticket database per run"
            + (
                f"; {settings['rounds']} rounds per connection count in Thue-Morse order"
                " (ours first, then reversed as ABBA BAAB…), so the machine's drift cancels from"
                " the pooled ratio)"
                if settings.get("rounds", 1) > 1
                else ")"
            )
        )
        out.append("")
        out.append(
            "| system | conns | round | requests/s | tickets sold/s | p50 ms | p90 ms | p99 ms |"
            " errors | CPU cores: server / postgres / load / other | server CPU µs per request"
            " | write batch mean / p50 / p99: rows (agent-commands)"
            f" | leader connection: busy committing, mean commit, commits over {SLOW_COMMIT_MS} ms"
            " | integrity | id-prefix |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|---|")
        for run in runs:
            cpu = run["cpu"]
            share = _cores(cpu, "server", "postgres", "load", "other")
            rows = run["db"]["batch_rows"]
            commands = run["db"]["batch_commands"]
            batch = (
                f"{rows['mean']:.0f} / {rows['p50']:.0f} / {rows['p99']:.0f}"
                f" ({commands['mean']:.0f} / {commands['p50']:.0f} / {commands['p99']:.0f})"
                if run["system"] == "ours"
                else "1 transaction per request"
            )
            commits = run.get("leader_commits")
            leader = (
                f"{commits['busy_share']:.0%}, {commits['mean_commit_ms']:.1f} ms,"
                f" {_slow_commits(commits)}"
                if commits
                else "–"
            )
            checks = run["integrity"]
            out.append(
                f"| {run['system']} | {run['connections']} | {run.get('round', 1)}"
                f" | {run['requests_per_s']:,.0f}"
                f" | {run['sold_per_s']:,.0f} | {_ms(run['latency_ms'].get('p50'))}"
                f" | {_ms(run['latency_ms'].get('p90'))} | {_ms(run['latency_ms'].get('p99'))}"
                f" | {run['errors']['total']} | {share} | {_server_us_per_request(run)}"
                f" | {batch} | {leader}"
                f" | {'ok' if checks['ok'] else '**FAILED**'}"
                f" | {'held' if checks['prefix_ok'] else 'did not hold'}"
                f"{' (starved!)' if run['starved'] else ''} |"
            )
        compared = comparisons(runs)
        if compared:
            pooled = "" if settings.get("rounds", 1) == 1 else ", each round's runs pooled"
            out.append("")
            out.append(
                f"| conns | sold/s ours ÷ baseline{pooled} | within each round"
                " | mean p50 ours ÷ baseline | mean p99 ours ÷ baseline |"
            )
            out.append("|---:|---:|---|---:|---:|")
            for c in compared:
                out.append(
                    f"| {c.connections} | {c.sold_ratio:.2f}×"
                    f" | {', '.join(f'{r:.2f}×' for r in c.round_ratios)}"
                    f" | {_ratio(c.ours.mean('p50'), c.baseline.mean('p50'))}"
                    f" | {_ratio(c.ours.mean('p99'), c.baseline.mean('p99'))} |"
                )
    if "dispatcher" in results:
        d = results["dispatcher"]
        b = d["batch_commands"]
        out.append("")
        out.append(
            f"**Dispatcher alone** (in-process, no HTTP: {d['agents']:,} agent tasks cycling"
            f" `fetch` → `sell` for {d['duration_s']:.0f} s; COPY: the same number of rows into"
            " a plain table of the same database)"
        )
        out.append("")
        out.append(
            "| state changes/s (assign + sell) | tickets sold/s | commits/s"
            " | batch: commands mean / p50 / p99 | commit ms p50 / p99 | COPY rows/s"
            " | dispatcher ÷ COPY | errors | CPU cores: bench process / postgres / other |"
        )
        out.append("|---:|---:|---:|---|---|---:|---:|---:|---|")
        commit = d["batch_commit_ms"]
        out.append(
            f"| {d['state_changes_per_s']:,.0f} | {d['sold_per_s']:,.0f}"
            f" | {d['batches'] / d['duration_s']:,.0f}"
            f" | {b['mean']:.0f} / {b['p50']:.0f} / {b['p99']:.0f}"
            f" | {commit['p50']:.1f} / {commit['p99']:.1f}"
            f" | {d['copy']['rows_per_s']:,.0f} | {d['ratio_to_copy']:.2f}"
            f" | {sum(d['errors'].values())} | {_cores(d['cpu'], 'load', 'postgres', 'other')} |"
        )
    if "startup" in results:
        s = results["startup"]
        out.append("")
        out.append("**Start-up** (`tickets serve`, measured from process spawn)")
        out.append("")
        out.append(
            "| unassigned tickets | agents (held tickets) | listening | leadership gained"
            " | first fetch 200 | RSS at ready | RSS 1 s later |"
        )
        out.append("|---:|---:|---:|---:|---:|---:|---:|")
        led = s["leadership_gained_s"]
        out.append(
            f"| {s['unassigned_tickets']:,} | {s['agents']:,} ({s['held_tickets']:,})"
            f" | {s['first_http_s']:.2f} s | {'–' if led is None else f'{led:.2f} s'}"
            f" | {s['ready_s']:.2f} s | {s['rss_ready_mb']:.0f} MB"
            f" | {s['rss_after_1s_mb']:.0f} MB |"
        )
    targets = _targets(results)
    if targets:
        out.append("")
        out.append("| target | measured | met |")
        out.append("|---|---|---|")
        for name, measured, ok in targets:
            out.append(f"| {name} | {measured} | {_mark(ok)} |")
    if "profile" in results:
        p = results["profile"]["profile"]
        out.append("")
        out.append(
            f"**Where ours spends its CPU** (py-spy, {p['samples']:,} samples of the server"
            f" process during a {results['profile']['connections']}-connection run; each sample"
            " in one bucket by its innermost recognised frame)"
        )
        out.append("")
        out.append("| bucket | % of samples |")
        out.append("|---|---:|")
        for name, pct in p["buckets_pct"][:14]:
            out.append(f"| {name} | {pct} |")
        out.append("")
        out.append("| inclusive: function on the stack | % of samples |")
        out.append("|---|---:|")
        for name, pct in p["inclusive_pct"]:
            out.append(f"| {name} | {pct} |")
    return "\n".join(out)


def _targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    rows: list[tuple[str, str, bool]] = []
    for comparison in comparisons(results["http"]):
        ratio = comparison.sold_ratio
        rows.append(
            (
                f"sold/s ≥ {TARGET_SOLD_RATIO:g}× baseline @ {comparison.connections}",
                f"{ratio:.2f}×",
                ratio >= TARGET_SOLD_RATIO,
            )
        )
    # Every round must meet these on its own: pooling would hide one bad run.
    for (system, connections), runs in by_system_and_connections(results["http"]).items():
        if system != "ours":
            continue
        every = " (every round)" if len(runs) > 1 else ""
        p99s = [run["latency_ms"]["p99"] for run in runs]
        rows.append(
            (
                f"p99 < {TARGET_P99_MS:g} ms @ {connections}{every}",
                " / ".join(f"{p99:.1f}" for p99 in p99s) + " ms",
                all(p99 < TARGET_P99_MS for p99 in p99s),
            )
        )
        errors = [run["errors"]["total"] for run in runs]
        rows.append(
            (
                f"zero errors @ {connections}{every}",
                " / ".join(str(count) for count in errors),
                not any(errors),
            )
        )
        intact = [run["integrity"]["ok"] and run["integrity"]["prefix_ok"] for run in runs]
        rows.append(
            (
                f"integrity and id-prefix @ {connections}{every}",
                " / ".join("ok" if ok else "failed" for ok in intact),
                all(intact),
            )
        )
    if "dispatcher" in results:
        rate = results["dispatcher"]["state_changes_per_s"]
        rows.append(
            (
                f"dispatcher alone ≥ {TARGET_STATE_CHANGES_PER_S:,} state changes/s",
                f"{rate:,.0f}/s",
                rate >= TARGET_STATE_CHANGES_PER_S,
            )
        )
    if "startup" in results:
        s = results["startup"]
        rows.append(
            (
                f"ready < {TARGET_READY_S:g} s ({s['unassigned_tickets']:,} tickets,"
                f" {s['agents']:,} agents)",
                f"{s['ready_s']:.2f} s",
                s["ready_s"] < TARGET_READY_S,
            )
        )
        rows.append(
            (
                f"RSS < {TARGET_RSS_MB:g} MB after start-up",
                f"{s['rss_after_1s_mb']:.0f} MB",
                max(s["rss_ready_mb"], s["rss_after_1s_mb"]) < TARGET_RSS_MB,
            )
        )
    return rows


# ---------------------------------------------------------------- command line


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = sorted(set(names) - set(choices))
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}; pick from {choices}")
        return names

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--parts",
        type=_names(PARTS),
        default=list(DEFAULT_PARTS),
        help="comma-separated, from http,dispatcher,startup,profile"
        " (default: http,dispatcher,startup)",
    )
    p.add_argument(
        "--systems",
        type=_names(SYSTEMS),
        default=list(SYSTEMS),
        help="http part: ours,baseline (default: both)",
    )
    p.add_argument(
        "--connections",
        type=_ints,
        default=[100, 200],
        help="http part: connection counts, one agent each (default: 100,200)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="http part: rounds per connection count, the systems' order reversed as the"
        " Thue-Morse sequence says: 4 runs ours, baseline, baseline, ours, baseline, ours,"
        " ours, baseline, and a drift of the machine cancels from the pooled ratio (default: 4)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds measured per http run (default: 10; 40 per system and connection count"
        " over the 4 rounds)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=3.0,
        help="seconds of warm-up before each http run (default: 3)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="wrk threads (default: 2, the machine's cores)"
    )
    p.add_argument(
        "--driver",
        choices=("wrk", "aiohttp"),
        default="wrk",
        help="load generator (default: wrk; aiohttp needs no install but is slower)",
    )
    p.add_argument(
        "--tickets",
        type=int,
        default=2_000_000,
        help="tickets in the template (default: 2,000,000: no run starves)",
    )
    p.add_argument(
        "--dispatcher-agents",
        type=int,
        default=5_000,
        help="dispatcher part: concurrent agent tasks (default: 5,000)",
    )
    p.add_argument(
        "--dispatcher-duration",
        type=float,
        default=20.0,
        help="dispatcher part: seconds measured (default: 20)",
    )
    p.add_argument(
        "--startup-tickets",
        type=int,
        default=1_000_000,
        help="startup part: unassigned tickets (default: 1,000,000)",
    )
    p.add_argument(
        "--startup-agents", type=int, default=10_000, help="startup part: agents (default: 10,000)"
    )
    p.add_argument(
        "--startup-held",
        type=int,
        default=5,
        help="startup part: tickets each agent already holds (default: 5)",
    )
    p.add_argument(
        "--analyze-after-warmup",
        action="store_true",
        help="ANALYZE tickets after each warm-up, for both systems: statistics that"
        " know tickets are held and sold, as autovacuum's would be in a steady"
        " state (default: off: the statistics of the freshly imported tickets)",
    )
    p.add_argument(
        "--explain-slower-than-ms",
        type=float,
        default=None,
        help="diagnostic: log (auto_explain) and report the plans of statements"
        " slower than this; slows every statement, so not for the numbers",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where the JSON and the logs go (default: bench/results)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The in-process dispatcher logs like `tickets serve` does at LOG_LEVEL (default warning):
    # structlog's unconfigured default would print every debug line.
    log_format = "console" if sys.stderr.isatty() else "json"
    configure_logging(level=os.environ.get("LOG_LEVEL", "warning"), log_format=log_format)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: report
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if any(c % args.threads for c in args.connections) and args.driver == "wrk":
        raise SystemExit("--connections must be multiples of --threads (one agent per connection)")
    results = runtime.run(main_async(args))
    report = markdown(results)
    results["markdown"] = report
    path = args.results / f"{Path(results['logs']).name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(report)
    print(f"\nraw results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
