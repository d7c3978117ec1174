"""The second fence: guarded, epoch-fenced writes refuse what memory got wrong.

These drive storage/leadership.py directly with decisions the state machine would never
make, and check that nothing of such a batch is written.
"""

from __future__ import annotations

import pytest

from storage.errors import Diverged, Fenced
from tests.support.batches import commit


async def _state(db) -> list[tuple]:
    rows = await db.fetch("SELECT id, status, agent_id FROM tickets ORDER BY id")
    events = await db.fetchval("SELECT count(*) FROM ticket_events")
    return [tuple(r) for r in rows] + [("events", events)]


async def test_assigning_a_ticket_someone_holds_rolls_the_whole_batch_back(leader, make, db):
    one, two = await make.agent(), await make.agent()
    first, second = await make.tickets(2)
    await commit(leader, 1, [(first, one.agent_id)], [])
    before = await _state(db)
    with pytest.raises(Diverged):
        await commit(leader, 2, [(second, two.agent_id), (first, two.agent_id)], [])
    assert await _state(db) == before


async def test_selling_for_the_wrong_agent_rolls_the_whole_batch_back(leader, make, db):
    one, two = await make.agent(), await make.agent()
    first, second = await make.tickets(2)
    await commit(leader, 1, [(first, one.agent_id), (second, two.agent_id)], [])
    before = await _state(db)
    with pytest.raises(Diverged):
        await commit(leader, 2, [], [(second, two.agent_id), (first, two.agent_id)])
    assert await _state(db) == before


async def test_a_stale_epoch_writes_nothing(leader, make, db):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    await db.execute("UPDATE dispatcher_leadership SET epoch = epoch + 1")
    before = await _state(db)
    with pytest.raises(Fenced):
        await commit(leader, 1, [(ticket, agent.agent_id)], [])
    with pytest.raises(Fenced):
        await leader.release(2, agent.agent_id, [ticket])
    assert await _state(db) == before


async def test_a_ticket_cannot_be_assigned_and_sold_in_one_batch(leader, make, db):
    agent = await make.agent()
    (ticket,) = await make.tickets(1)
    before = await _state(db)
    with pytest.raises(Diverged):
        await commit(leader, 1, [(ticket, agent.agent_id)], [(ticket, agent.agent_id)])
    assert await _state(db) == before


@pytest.mark.parametrize("state", ["unassigned", "sold", "deleted"])
async def test_selling_a_ticket_nobody_holds_rolls_the_whole_batch_back(leader, make, db, state):
    agent = await make.agent()
    held, target = await make.tickets(2)
    await commit(leader, 1, [(held, agent.agent_id)], [])
    if state == "sold":
        await commit(leader, 2, [(target, agent.agent_id)], [])
        await commit(leader, 3, [], [(target, agent.agent_id)])
    elif state == "deleted":
        await db.execute("DELETE FROM tickets WHERE id = $1", target)
    before = await _state(db)
    with pytest.raises(Diverged):
        await commit(leader, 4, [], [(held, agent.agent_id), (target, agent.agent_id)])
    assert await _state(db) == before
