"""One rule says which agents trade, `agent_can_trade` (migration 0010), read by the
dispatcher's snapshot and by `stats`: the agent active, its user active, the user no admin."""

from __future__ import annotations

import itertools

from storage.queries import QUERIES


async def test_the_rule_over_every_combination(db, make):
    expected = {}
    for agent_active, user_active, user_admin in itertools.product((True, False), repeat=3):
        agent = await make.agent(is_active=agent_active)
        await db.execute(
            "UPDATE users SET is_active = $2, is_staff = $3 WHERE id = $1",
            agent.user_id,
            user_active,
            user_admin,
        )
        expected[agent.agent_id] = agent_active and user_active and not user_admin

    snapshot = {
        row["id"]: row["is_active"] for row in await db.fetch(QUERIES["dispatcher_agents_all"])
    }
    assert snapshot == expected
    totals = await db.fetchrow(QUERIES["ops_agents_totals"])
    assert totals["active"] == 1


async def test_the_planner_inlines_it(db):
    """Written out, the expression cost nothing; as an opaque function call it would cost a
    call per agent in every snapshot."""
    plan = "\n".join(
        row[0] for row in await db.fetch(f"EXPLAIN (VERBOSE) {QUERIES['dispatcher_agents_all']}")
    )
    assert "agent_can_trade" not in plan
    assert "is_staff" in plan
