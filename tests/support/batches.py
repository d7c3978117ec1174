"""Batches written straight through a LeaderConnection, as the actor would write them."""

from __future__ import annotations

from storage.leadership import LeaderConnection


async def commit(
    leader: LeaderConnection, batch: int, assignments: list[tuple], sales: list[tuple]
) -> None:
    """`(ticket, agent)` pairs, as the actor's arrays."""
    await leader.commit_batch(
        batch,
        assign_ids=[t for t, _ in assignments],
        assign_agents=[a for _, a in assignments],
        sell_ids=[t for t, _ in sales],
        sell_agents=[a for _, a in sales],
    )
