"""The leader's upkeep (heartbeat, rescan) falls due by the clock, busy or idle.

The leader's session has an idle timeout (write_timeout_s), so that a leader cut off by a
partition frees the lock. A steady stream of fetches that write nothing (agents at capacity,
an empty queue: the product's normal quiet state) sends no statement; the heartbeat must still
go out, or PostgreSQL ends the session and leadership flaps every few seconds. Likewise a
stream of requests must not postpone the periodic rescan, the safety net for lost
notifications, for as long as it lasts.
"""

from __future__ import annotations

import asyncio
import time

from dispatcher.actor import Dispatcher, DispatcherOptions

SHORT_IDLE = DispatcherOptions(
    heartbeat_interval_s=0.2, write_timeout_s=1.0, rescan_interval_s=3600
)


async def _hammer(dispatcher: Dispatcher, agent_ids: list[int], seconds: float) -> int:
    """Fetch from every agent in a tight loop until `seconds` pass; returns the fetches."""
    deadline = time.monotonic() + seconds
    done = 0

    async def loop(agent_id: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await dispatcher.fetch(agent_id)
            done += 1

    await asyncio.gather(*(loop(a) for a in agent_ids))
    return done


async def test_fetches_that_write_nothing_keep_the_leader_alive(start_dispatcher, make, db):
    # Nothing to hand out and nothing to sell: every batch is decided without a statement.
    agents = [await make.agent(capacity=0) for _ in range(3)] + [await make.agent()]
    dispatcher = await start_dispatcher(SHORT_IDLE)
    epoch = dispatcher.epoch

    # Three idle timeouts' worth: before the fix the session ended after the first.
    fetches = await _hammer(
        dispatcher, [a.agent_id for a in agents], 3 * SHORT_IDLE.write_timeout_s
    )

    assert fetches > 100  # the stream really was steady
    assert dispatcher.role == "leader"
    assert dispatcher.epoch == epoch
    assert dispatcher.stats.leadership_gained == 1
    assert await db.fetchval("SELECT epoch FROM dispatcher_leadership") == epoch


async def test_a_steady_stream_of_requests_does_not_postpone_the_rescan(start_dispatcher, make, db):
    options = DispatcherOptions(rescan_interval_s=0.3)
    agents = [await make.agent(capacity=0) for _ in range(3)]
    dispatcher = await start_dispatcher(options)
    # As if the notification were lost: the insert trigger does not fire.
    await db.execute("ALTER TABLE tickets DISABLE TRIGGER tickets_notify_inserted")
    try:
        ids = await make.tickets(3)
        rescans = dispatcher.stats.rescans
        await _hammer(dispatcher, [a.agent_id for a in agents], 2.0)
        assert dispatcher.stats.rescans >= rescans + 2
        assert dispatcher.queue_length == 3
        taker = await make.agent(capacity=3)
        assert [t["id"] for t in await dispatcher.fetch(taker.agent_id)] == ids
    finally:
        await db.execute("ALTER TABLE tickets ENABLE TRIGGER tickets_notify_inserted")
