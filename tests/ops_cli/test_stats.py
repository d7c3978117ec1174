"""`tickets stats` on an arranged database: the numbers (--json) and the tables."""

from __future__ import annotations

import re

import asyncpg

from tests.cli.conftest import Tickets, explain
from tests.ops_cli.conftest import run_json
from tests.support.factories import Factory


async def hold(db: asyncpg.Connection, agent_id: int, ticket_ids: list[int]) -> None:
    await db.execute(
        "UPDATE tickets SET status = 'assigned', agent_id = $1, assigned_at = now()"
        " WHERE id = ANY($2::bigint[])",
        agent_id,
        ticket_ids,
    )


async def sell(db: asyncpg.Connection, agent_id: int, ticket_ids: list[int]) -> None:
    await db.execute(
        "UPDATE tickets SET status = 'sold', agent_id = $1, assigned_at = now(), sold_at = now()"
        " WHERE id = ANY($2::bigint[])",
        agent_id,
        ticket_ids,
    )


async def events(db: asyncpg.Connection, event: str, count: int, *, seconds_ago: int) -> None:
    """`count` audit events, `seconds_ago` before now (mid-minute: a second of drift is fine)."""
    await db.execute(
        "INSERT INTO ticket_event_groups (ticket_ids, event, agent_id, epoch, batch, at)"
        " SELECT ARRAY(SELECT generate_series(1, $2)::bigint), $1, NULL, 1, 1,"
        " now() - make_interval(secs => $3)",
        event,
        count,
        seconds_ago,
    )


async def arrange(db: asyncpg.Connection, make: Factory) -> dict[str, int]:
    busy = await make.agent(username="busy", capacity=5)
    steady = await make.agent(username="steady", capacity=10)
    retired = await make.agent(username="retired", capacity=2, is_active=False)
    ids = await make.tickets(20)
    assert busy.agent_id and steady.agent_id and retired.agent_id
    await hold(db, busy.agent_id, ids[0:3])
    await sell(db, busy.agent_id, ids[3:5])
    await hold(db, steady.agent_id, ids[5:6])
    await sell(db, steady.agent_id, ids[6:11])
    await sell(db, retired.agent_id, ids[11:12])
    # ids[12:] (8 tickets) wait; the oldest of them for ten minutes.
    await db.execute(
        "UPDATE tickets SET created_at = now() - interval '10 minutes' WHERE id = $1", ids[12]
    )
    await events(db, "assigned", 4, seconds_ago=30)  # minute 1
    await events(db, "sold", 2, seconds_ago=30)
    await events(db, "released", 9, seconds_ago=30)  # neither assigned nor sold
    await events(db, "assigned", 1, seconds_ago=150)  # minute 3
    await events(db, "sold", 3, seconds_ago=270)  # minute 5
    await events(db, "assigned", 7, seconds_ago=400)  # too old
    return {"busy": busy.agent_id, "steady": steady.agent_id, "retired": retired.agent_id}


async def test_stats_json_counts_what_the_database_holds(tickets: Tickets, db, make) -> None:
    agents = await arrange(db, make)

    report = await run_json(tickets, "stats", "--top", "2")

    assert report["backlog"]["unassigned"] == 8
    assert 600 <= report["backlog"]["oldest_age_s"] < 660
    assert report["backlog"]["oldest_created_at"] is not None
    assert report["agents"]["top"] == [
        {
            "agent_id": agents["busy"],
            "username": "busy",
            "capacity": 5,
            "held": 3,
            "sold": 2,
            "active": True,
        },
        {
            "agent_id": agents["steady"],
            "username": "steady",
            "capacity": 10,
            "held": 1,
            "sold": 5,
            "active": True,
        },
    ]
    assert report["agents"]["totals"] == {
        "agents": 3,
        "active": 2,
        "active_capacity": 15,
        "held": 4,
        "sold": 8,
    }
    throughput = report["throughput"]
    assert throughput["minutes"] == 5
    assert [(m["minutes_ago"], m["assigned"], m["sold"]) for m in throughput["by_minute"]] == [
        (1, 4, 2),
        (2, 0, 0),
        (3, 1, 0),
        (4, 0, 0),
        (5, 0, 3),
    ]
    assert throughput["assigned_per_minute"] == 1.0
    assert throughput["sold_per_minute"] == 1.0
    # Nothing runs: nobody leads, and the row still says nobody ever did.
    assert report["leadership"]["state"] == "none"
    assert report["leadership"]["lock"] == {"held": False}
    assert report["leadership"]["leader"]["epoch"] == 0


async def test_stats_counts_as_active_only_agents_that_can_trade(tickets: Tickets, make) -> None:
    """An admin's agent, or one whose user is deactivated, is refused fetch and sell: its
    capacity is no capacity of the queue's."""
    await make.agent(username="trader", capacity=5)
    await make.agent(username="boss", capacity=7, is_staff=True)
    await make.agent(username="gone", capacity=11, is_active=True)
    await make.db.execute("UPDATE users SET is_active = false WHERE username = 'gone'")

    report = await run_json(tickets, "stats")

    totals = report["agents"]["totals"]
    assert (totals["agents"], totals["active"], totals["active_capacity"]) == (3, 1, 5)
    active = {row["username"]: row["active"] for row in report["agents"]["top"]}
    assert active == {"trader": True, "boss": False, "gone": False}


async def test_stats_renders_tables(tickets: Tickets, db, make) -> None:
    await arrange(db, make)

    result = await tickets.run("stats", "--minutes", "3", env={"COLUMNS": "120"})

    assert result.returncode == 0, explain(result)
    out = result.stdout
    for heading in ["Backlog", "Leadership", "Throughput, last 3 minutes", "Agents: 3 of 3"]:
        assert heading in out
    assert re.search(r"oldest waiting\s+10m", out)
    assert "none: no process holds the dispatcher lock" in out
    # The rows, in order of tickets held, and the totals footer.
    assert out.index("busy") < out.index("steady") < out.index("retired")
    assert "all 3" in out and "15 active" in out and "2 active" in out
    assert "-3 min" in out and "-4 min" not in out
    assert result.stderr == ""


async def test_stats_names_the_running_leader(tickets: Tickets, leader) -> None:
    from web.keys import DISPATCHER

    dispatcher = leader.app[DISPATCHER]

    report = await run_json(tickets, "stats")

    leadership = report["leadership"]
    assert leadership["state"] == "leading"
    assert leadership["leader"]["identity"] == dispatcher.identity
    assert leadership["leader"]["epoch"] == dispatcher.epoch
    assert leadership["lock"]["held"] is True
    assert leadership["lock"]["pid"] == leadership["leader"]["holder_pid"]
    assert report["backlog"] == {"unassigned": 0, "oldest_created_at": None, "oldest_age_s": None}


async def test_stats_exits_2_when_the_database_is_unreachable(tickets: Tickets) -> None:
    from tests.support.postgres import free_port

    result = await tickets.run(
        "stats", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"}
    )
    assert result.returncode == 2, explain(result)
    assert "database unavailable" in result.stderr
    assert result.stdout == ""
