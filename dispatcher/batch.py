"""A batch of trades and the waiters behind it: what the actor decides together, writes in one
statement, and answers together once it is committed.

Kept apart from the actor so that the actor reads as control flow (lead, decide, commit,
answer) while these are plain values: a waiter is a command and the future its caller
awaits; a batch grows the statement's arrays as each trade is decided, so nothing is left to
build between two commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dispatcher import commands as cmd
from dispatcher.core import Fetched, Rejected, Sold
from storage.wire import timestamp_from_text


@dataclass(slots=True)
class Waiting:
    command: cmd.Command
    future: asyncio.Future[Any]
    # Set for requests that came by NOTIFY: the id their answer is published under.
    reply_id: str | None = None


@dataclass
class Batch:
    """Trades decided together and written in one statement. The statement's arrays grow
    as each trade is decided, so nothing is left to build between two commits."""

    # Every trade with its decision, in the order it was decided, which is the order it
    # arrived in: answered in that order too, so whoever has waited longest is written first.
    decided: list[tuple[Waiting, Fetched | Sold | Rejected]] = field(default_factory=list)
    assign_ids: list[int] = field(default_factory=list)
    assign_agents: list[int] = field(default_factory=list)
    sell_ids: list[int] = field(default_factory=list)
    sell_agents: list[int] = field(default_factory=list)
    # What its fetches assign: a sale of these must wait for a later batch.
    assigned_now: set[int] = field(default_factory=set)
    # Tickets its fetches answer with that they did not just assign (a retry, a partial
    # sale), each with the agent holding it: the commit does not return them.
    held_before: dict[int, int] = field(default_factory=dict)
    number: int = 0
    started: float = 0.0
    committed: float = 0.0

    @property
    def size(self) -> int:
        return len(self.decided)

    @property
    def arrived(self) -> list[Waiting]:
        return [item for item, _ in self.decided]

    def add_fetch(self, item: Waiting, fetched: Fetched | Rejected) -> None:
        self.decided.append((item, fetched))
        if isinstance(fetched, Fetched):
            self.assign_ids.extend(fetched.assigned)
            self.assign_agents.extend([fetched.agent_id] * len(fetched.assigned))
            self.assigned_now.update(fetched.assigned)
            if len(fetched.held) > len(fetched.assigned):
                assigned = set(fetched.assigned)
                self.held_before.update(
                    (t, fetched.agent_id) for t in fetched.held if t not in assigned
                )

    def add_sell(self, item: Waiting, decision: Sold | Rejected) -> None:
        self.decided.append((item, decision))
        if isinstance(decision, Sold):
            self.sell_ids.extend(decision.sold)
            self.sell_agents.extend([decision.agent_id] * len(decision.sold))


def settle_all(items: Iterable[Waiting], error: BaseException) -> None:
    for item in items:
        settle(item, error=error)


def settle(item: Waiting, *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a waiter, unless its caller went away (a cancelled future): the decision stands
    either way, and a retry sees it."""
    if item.future.done():
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        item.future.set_result(result)


def assigned_ticket(
    row: Mapping[str, Any],
    agent_id: int,
    timestamp: Callable[[Any], datetime] = timestamp_from_text,
) -> dict[str, Any]:
    """A fetch's ticket: the columns read at commit, as it stands once held by the agent.
    `timestamp` reads the row's timestamps: text from the leader's batch, by default."""
    return {
        "id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "status": "assigned",
        "agent": agent_id,
        "created_at": timestamp(row["created_at"]),
        "assigned_at": timestamp(row["assigned_at"]),
        "sold_at": None,
    }
