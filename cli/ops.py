"""`tickets stats`: the queue at a glance, for an operator or (with --json) a script.

Everything comes from the database (storage/sql/ops.sql), never from a server's memory, so
it answers the same with one server, several, or none running:

* backlog: unassigned tickets, and how long the oldest has waited;
* agents: the ones holding the most (username, id, capacity, held, sold, active) and totals;
* leadership: who leads (identity, epoch, since) and whether the lock is held right now;
* throughput: assignments and sales per minute over the last minutes, from ticket_events.at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table

from cli.dispatch import (
    Leadership,
    age,
    key_value_table,
    leadership_rows,
    print_json,
    read_leadership,
)
from cli.support import load_settings, open_database, run
from config.settings import Settings

DEFAULT_TOP = 20
DEFAULT_MINUTES = 5


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--top",
    type=click.IntRange(1, 1000),
    default=DEFAULT_TOP,
    show_default=True,
    help="How many agents to list (those holding the most first).",
)
@click.option(
    "--minutes",
    type=click.IntRange(1, 60),
    default=DEFAULT_MINUTES,
    show_default=True,
    help="How many minutes of throughput to show, one row each.",
)
def stats(as_json: bool, top: int, minutes: int) -> None:
    """The state of the queue: backlog, the agents and what they hold, who leads, and
    assignments and sales per minute over the last minutes.

    Read from the database, so it works with any number of servers running, or none.
    Exits 2 when the database cannot be reached.

    \b
    Examples:
      tickets stats
      tickets stats --json --top 100 | jq .backlog
    """
    settings = load_settings()
    report = run(_gather(settings, top=top, minutes=minutes))
    if as_json:
        print_json(report.as_json())
        return
    Console().print(report.render())


class Report:
    def __init__(
        self,
        *,
        now: datetime,
        backlog: dict[str, Any],
        top: list[dict[str, Any]],
        totals: dict[str, Any],
        throughput: list[dict[str, Any]],
        leadership: Leadership,
    ) -> None:
        self.now = now
        self.backlog = backlog
        self.top = top
        self.totals = totals
        self.throughput = throughput
        self.leadership = leadership

    @property
    def minutes(self) -> int:
        return len(self.throughput)

    def per_minute(self, event: str) -> float:
        return round(sum(row[event] for row in self.throughput) / max(1, self.minutes), 2)

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.now,
            "backlog": {
                "unassigned": self.backlog["unassigned"],
                "oldest_created_at": self.backlog["oldest_created_at"],
                "oldest_age_s": self.backlog["oldest_age_s"],
            },
            "agents": {
                "top": [
                    {
                        "agent_id": row["agent_id"],
                        "username": row["username"],
                        "capacity": row["capacity"],
                        "held": row["held"],
                        "sold": row["sold"],
                        "active": row["is_active"],
                    }
                    for row in self.top
                ],
                "totals": dict(self.totals),
            },
            "leadership": self.leadership.as_json(),
            "throughput": {
                "minutes": self.minutes,
                "assigned_per_minute": self.per_minute("assigned"),
                "sold_per_minute": self.per_minute("sold"),
                "by_minute": [dict(row) for row in self.throughput],
            },
        }

    def render(self) -> Group:
        backlog = key_value_table(
            "Backlog",
            [
                ("unassigned", f"{self.backlog['unassigned']:,}"),
                ("oldest waiting", _waiting(self.backlog)),
            ],
        )
        leadership = key_value_table("Leadership", leadership_rows(self.leadership, self.now))
        return Group(backlog, "", leadership, "", self._throughput_table(), "", self._agents())

    def _throughput_table(self) -> Table:
        table = Table(
            title=f"Throughput, last {self.minutes} minutes",
            title_justify="left",
            show_footer=True,
        )
        table.add_column("minute", footer="per minute")
        table.add_column("assigned", justify="right", footer=f"{self.per_minute('assigned'):,g}")
        table.add_column("sold", justify="right", footer=f"{self.per_minute('sold'):,g}")
        for row in self.throughput:
            ago = row["minutes_ago"]
            table.add_row(f"-{ago} min", f"{row['assigned']:,}", f"{row['sold']:,}")
        return table

    def _agents(self) -> Table:
        totals = self.totals
        shown = len(self.top)
        table = Table(
            title=f"Agents: {shown} of {totals['agents']:,} holding the most",
            title_justify="left",
            show_footer=True,
        )
        table.add_column("username", footer=f"all {totals['agents']:,}")
        table.add_column("agent id", justify="right")
        table.add_column(
            "capacity", justify="right", footer=f"{totals['active_capacity']:,} active"
        )
        table.add_column("held", justify="right", footer=f"{totals['held']:,}")
        table.add_column("sold", justify="right", footer=f"{totals['sold']:,}")
        table.add_column("active", footer=f"{totals['active']:,} active")
        for row in self.top:
            table.add_row(
                row["username"],
                str(row["agent_id"]),
                f"{row['capacity']:,}",
                f"{row['held']:,}",
                f"{row['sold']:,}",
                "yes" if row["is_active"] else "no",
            )
        return table


async def _gather(settings: Settings, *, top: int, minutes: int) -> Report:
    async with open_database(settings, existing=True) as database:
        return Report(
            now=await database.fetchval("ops_now"),
            backlog=await database.fetchrow("ops_backlog") or {},
            top=await database.fetch("ops_agents_top", top),
            totals=await database.fetchrow("ops_agents_totals") or {},
            throughput=await database.fetch("ops_throughput_by_minute", minutes),
            leadership=await read_leadership(database, lock_key=settings.dispatcher_lock_key),
        )


def _waiting(backlog: dict[str, Any]) -> str:
    """How long the oldest unassigned ticket has waited, and since when."""
    created = backlog["oldest_created_at"]
    if created is None:
        return age(backlog["oldest_age_s"])
    return f"{age(backlog['oldest_age_s'])} (created {created.isoformat(timespec='seconds')})"
