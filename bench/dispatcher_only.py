"""The dispatcher alone: no HTTP, no auth, no JSON — `Dispatcher.fetch` / `sell` in-process.

Thousands of agent tasks cycle fetch -> sell against one `dispatcher.actor.Dispatcher` on a
real database for a fixed time; the result is the assignments + sales the dispatcher
committed per second (its own stats, cross-checked with ticket_events). Beside it, a plain
COPY of the same number of rows into a scratch table on the same database says how close
that is to what the database takes in at all.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter
from typing import Any

import asyncpg

from bench.harness import CpuMeter, analyze, db_now, integrity, summary, window_counts
from cli import runtime
from config.settings import Settings
from dispatcher.actor import Dispatcher
from web.app import dispatcher_options


async def run_dispatcher_only(
    dsn: str,
    agent_ids: list[int],
    *,
    duration_s: float,
    warmup_s: float = 2.0,
    postmaster: int | None = None,
    analyze_after_warmup: bool = False,
) -> dict[str, Any]:
    # DISPATCHER_* from the environment apply, exactly as for `tickets serve`, and so do its
    # event loop (bench.py runs on it) and garbage-collector settings.
    collector = runtime.tune_garbage_collector()
    options = dispatcher_options(Settings(database_url=dsn))
    dispatcher = Dispatcher(dsn, identity=f"bench:{os.getpid()}", options=options)
    await dispatcher.start()
    await asyncio.wait_for(dispatcher.leading.wait(), 60)
    errors: Counter[str] = Counter()
    cycles = 0
    empty = 0
    latencies: list[float] = []
    measuring = False

    async def agent(agent_id: int, deadline: float) -> None:
        nonlocal cycles, empty
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                held = await dispatcher.fetch(agent_id)
                ids = [ticket["id"] for ticket in held]
                if not ids:
                    empty += 1
                    await asyncio.sleep(0.01)
                    continue
                await dispatcher.sell(agent_id, ids)
            except Exception as exc:  # counted and reported; the loop is bounded in time
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            if measuring:
                cycles += 1
                latencies.append(time.perf_counter() - began)

    try:
        if warmup_s:
            end = time.perf_counter() + warmup_s
            await asyncio.gather(*(agent(a, end) for a in agent_ids))
        if analyze_after_warmup:
            await analyze(dsn, "tickets")
        stats = dispatcher.stats
        before = (stats.assigned, stats.sold, stats.batches, stats.commands)
        measuring = True
        meter = CpuMeter(server=None, load="self", postmaster=postmaster)
        start = await db_now(dsn)
        meter.start()
        began = time.perf_counter()
        end = began + duration_s
        await asyncio.gather(*(agent(a, end) for a in agent_ids))
        elapsed = time.perf_counter() - began
        cpu = meter.stop()
        finished = await db_now(dsn)
        measuring = False
        assigned = stats.assigned - before[0]
        sold = stats.sold - before[1]
        batches = stats.batches - before[2]
        commands = stats.commands - before[3]
        # The stats keep the last 10,000 batches: the tail of the window when it had more.
        kept = list(stats.recent_batches)
        recent = kept[len(kept) - min(batches, len(kept)) :]
    finally:
        await dispatcher.stop()
        runtime.restore_garbage_collector(collector)
    counts = await window_counts(dsn, start, finished)
    checks = await integrity(dsn)
    changes = assigned + sold
    return {
        "agents": len(agent_ids),
        "duration_s": round(elapsed, 3),
        "assigned": assigned,
        "sold": sold,
        "state_changes": changes,
        "state_changes_per_s": round(changes / elapsed, 1),
        "sold_per_s": round(sold / elapsed, 1),
        "cycles": cycles,
        "cycle_latency_ms": summary([round(x * 1000, 3) for x in latencies]),
        "batches": batches,
        "commands": commands,
        "batch_commands": summary([size for size, _ in recent]),
        "batch_commit_ms": summary([round(seconds * 1000, 3) for _, seconds in recent]),
        "db_window": counts,
        "errors": dict(errors),
        "empty_fetches": empty,
        "cpu": cpu,
        "integrity": checks,
        "analyzed_after_warmup": analyze_after_warmup,
    }


async def copy_rate(dsn: str, rows: int) -> dict[str, Any]:
    """COPY `rows` rows shaped like ticket_events into a plain scratch table; rows/s.

    The text is built before the clock starts: what is timed is the COPY alone.
    """
    rows = max(rows, 1)
    lines = "".join(f"{n}\tsold\t{n % 5000 + 1}\t1\t{n // 1000}\n" for n in range(1, rows + 1))
    data = lines.encode()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "CREATE TABLE bench_copy_scratch (ticket_id bigint NOT NULL, event text NOT NULL,"
            " agent_id bigint, epoch bigint NOT NULL, batch bigint NOT NULL)"
        )
        began = time.perf_counter()
        await connection.copy_to_table("bench_copy_scratch", source=io.BytesIO(data))
        elapsed = time.perf_counter() - began
        await connection.execute("DROP TABLE bench_copy_scratch")
    finally:
        await connection.close()
    return {"rows": rows, "seconds": round(elapsed, 3), "rows_per_s": round(rows / elapsed, 1)}
