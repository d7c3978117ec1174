"""Start-up: how long `tickets serve` takes to lead on a big database, and its memory then.

The database holds `tickets` unassigned tickets and `agents` agents that already hold some
(the oldest ones, as the dispatcher would have handed them out). Measured from the spawn of
the process: the first HTTP answer (any status: the process listens), the `leadership_gained`
log line (by its own timestamp), and the first 200 of a real fetch by an agent (the
dispatcher decides); then the process's RSS.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from bench.harness import Server, drop_database, make_template, say, with_database
from tests.support.postgres import free_port


async def run_startup(
    server_dsn: str,
    *,
    migrated_template: str,
    workdir: Path,
    tickets: int,
    agents: int,
    held_per_agent: int,
) -> dict[str, Any]:
    name = f"bench_startup_{secrets.token_hex(3)}"
    say(
        f"start-up: seeding {tickets:,} unassigned tickets, {agents:,} agents holding "
        f"{held_per_agent} each"
    )
    template = await make_template(
        server_dsn,
        name,
        migrated_template=migrated_template,
        agents=agents,
        tickets=tickets + agents * held_per_agent,
        held_per_agent=held_per_agent,
    )
    server: Server | None = None
    try:
        say("start-up: starting `tickets serve`")
        server = await Server.start(
            "ours",
            database_url=with_database(server_dsn, name),
            port=free_port(),
            log_path=workdir / f"{name}.log",
            log_level="info",  # for the leadership_gained line; only the polls are logged
        )
        # The last agent: its row and holdings are at the far end of every table.
        ready = await server.wait_ready(template.tokens[-1], timeout_s=120)
        rss_ready = server.rss()
        await asyncio.sleep(1.0)
        rss_settled = server.rss()
        led = server.log_event_time("leadership_gained")
    finally:
        if server is not None:
            await server.stop()
        await drop_database(server_dsn, name)
    return {
        "unassigned_tickets": tickets,
        "agents": agents,
        "held_tickets": agents * held_per_agent,
        "seed_s": {k: round(v, 2) for k, v in template.seed_s.items()},
        "first_http_s": ready["first_http_s"],
        "leadership_gained_s": led,
        "ready_s": ready["ready_s"],
        "rss_ready_mb": round(rss_ready / 2**20, 1),
        "rss_after_1s_mb": round(rss_settled / 2**20, 1),
    }
