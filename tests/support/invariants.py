"""The checks every fault drill ends with: what the agents were told against what the database
holds, and the database against itself.

Two independent records are compared:

* the `Ledger`: every ticket each agent saw in a 200 fetch response and every sale it was
  told succeeded (recorded by the load generator or the test as answers arrive);
* the database: `tickets` (current state), `ticket_events` (the append-only audit log the
  dispatcher writes in the same statement as each change), `agents`, `pg_locks`.

The checks (`check_invariants` runs them all and reports every violation at once):

1. no ticket appears in two agents' 200 fetch responses (unless tickets were released);
2. replaying `ticket_events` in id order never assigns a ticket that is assigned or sold,
   never sells a ticket not held by the seller, never releases one the agent does not hold,
   never deletes one that is held; and the replay ends where `tickets` is;
3. every acknowledged assignment is in the database as held or sold by that agent, and every
   acknowledged sale as sold by that agent (unless tickets were released);
4. the CHECK constraints of `tickets` hold row by row, and no agent holds more than its
   capacity (nothing when inactive);
5. without releases, the tickets that left the queue are a prefix of all tickets in id order;
6. at most one session holds the dispatcher's advisory lock.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

LOCK_KEY = 7_302_211  # keep in sync with DispatcherOptions.lock_key


@dataclass
class Ledger:
    """What agents were told. Fill it as 200 answers arrive; anomalies are kept for the check."""

    assigned: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    sold: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    shown_to: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    # ticket -> time.time() of its first acknowledgement (assignment, then sale), for reports
    first_seen: dict[int, float] = field(default_factory=dict)
    first_sold: dict[int, float] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)

    def fetched(self, agent_id: int, tickets: Iterable[Mapping[str, Any]]) -> list[int]:
        """Record a 200 fetch response; returns its ticket ids."""
        tickets = list(tickets)
        ids = [int(t["id"]) for t in tickets]
        if ids != sorted(ids):
            self.anomalies.append(f"agent {agent_id}: fetch answered out of order: {ids}")
        for ticket in tickets:
            if ticket.get("agent") != agent_id or ticket.get("status") != "assigned":
                self.anomalies.append(f"agent {agent_id}: fetch answered {dict(ticket)}")
        now = time.time()
        for ticket_id in ids:
            self.assigned[agent_id].add(ticket_id)
            self.shown_to[ticket_id].add(agent_id)
            self.first_seen.setdefault(ticket_id, now)
        return ids

    def sale_acknowledged(self, agent_id: int, ticket_ids: Iterable[int]) -> None:
        now = time.time()
        for ticket_id in ticket_ids:
            self.sold[agent_id].add(ticket_id)
            self.first_sold.setdefault(ticket_id, now)

    def copy(self) -> Ledger:
        """A frozen copy: later answers do not change it."""
        return Ledger(
            assigned=defaultdict(set, {a: set(ids) for a, ids in self.assigned.items()}),
            sold=defaultdict(set, {a: set(ids) for a, ids in self.sold.items()}),
            shown_to=defaultdict(set, {t: set(a) for t, a in self.shown_to.items()}),
            first_seen=dict(self.first_seen),
            first_sold=dict(self.first_sold),
            anomalies=list(self.anomalies),
        )

    def anomaly(self, message: str) -> None:
        self.anomalies.append(message)

    @property
    def acknowledged_assignments(self) -> int:
        return sum(len(ids) for ids in self.assigned.values())

    @property
    def acknowledged_sales(self) -> int:
        return sum(len(ids) for ids in self.sold.values())


class InvariantViolated(AssertionError):
    pass


async def check_invariants(
    db: asyncpg.Connection,
    ledger: Ledger | None = None,
    *,
    releases: bool = False,
    lock_key: int = LOCK_KEY,
) -> dict[str, int]:
    """Run every check; raise InvariantViolated listing all violations. Returns counts.

    Safe while load is running: the ledger is copied first, then the database is read in
    one REPEATABLE READ snapshot, so everything acknowledged before the copy (hence
    committed before the snapshot) must be visible in it.
    """
    problems: list[str] = []
    ledger = (ledger or Ledger()).copy()
    async with db.transaction(isolation="repeatable_read", readonly=True):
        tickets = {
            r["id"]: (r["status"], r["agent_id"])
            for r in await db.fetch("SELECT id, status, agent_id FROM tickets")
        }
        events = await db.fetch(
            "SELECT id, ticket_id, event, agent_id, epoch FROM ticket_events ORDER BY id"
        )
        constraint_problems = await _constraints(db)

    problems += [f"ledger: {a}" for a in ledger.anomalies[:20]]
    if not releases:
        problems += _shown_to_one_agent(ledger)
        problems += _acknowledged_are_stored(ledger, tickets)
        problems += _prefix(tickets)
    problems += _replay(events, tickets)
    problems += constraint_problems
    problems += await _one_lock_holder(db, lock_key)

    if problems:
        problems = _histories(problems, events, ledger) + problems
        shown = "\n  ".join(problems[:40])
        more = f"\n  … and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise InvariantViolated(f"{len(problems)} invariant violation(s):\n  {shown}{more}")
    return {
        "tickets": len(tickets),
        "events": len(events),
        "acknowledged_assignments": ledger.acknowledged_assignments,
        "acknowledged_sales": ledger.acknowledged_sales,
        "epochs": len({e["epoch"] for e in events}),
    }


def _shown_to_one_agent(ledger: Ledger) -> list[str]:
    return [
        f"(1) ticket {t} was in 200 fetch responses to agents {sorted(agents)}"
        for t, agents in sorted(ledger.shown_to.items())
        if len(agents) > 1
    ]


def _acknowledged_are_stored(
    ledger: Ledger, tickets: Mapping[int, tuple[str, int | None]]
) -> list[str]:
    problems = []
    for agent, ids in sorted(ledger.assigned.items()):
        for t in sorted(ids):
            status, owner = tickets.get(t, ("missing", None))
            if status not in ("assigned", "sold") or owner != agent:
                problems.append(
                    f"(3) ticket {t} was acknowledged to agent {agent}, database has"
                    f" {status} (agent {owner})"
                )
    for agent, ids in sorted(ledger.sold.items()):
        for t in sorted(ids):
            status, owner = tickets.get(t, ("missing", None))
            if status != "sold" or owner != agent:
                problems.append(
                    f"(3) sale of ticket {t} was acknowledged to agent {agent}, database has"
                    f" {status} (agent {owner})"
                )
    return problems


def _histories(problems: list[str], events: list[asyncpg.Record], ledger: Ledger) -> list[str]:
    """The audit trail and acknowledgement times of the first tickets named in problems."""
    named = []
    for problem in problems:
        match = re.search(r"ticket (\d+)", problem)
        if match and int(match.group(1)) not in named:
            named.append(int(match.group(1)))
    lines = []
    for t in named[:3]:
        trail = [
            f"#{e['id']} {e['event']} agent={e['agent_id']} epoch={e['epoch']}"
            for e in events
            if e["ticket_id"] == t
        ]
        seen = ledger.first_seen.get(t)
        sold = ledger.first_sold.get(t)
        lines.append(
            f"   ticket {t}: events {trail or 'none'}; first acknowledged"
            f" {_clock(seen)}, sale acknowledged {_clock(sold)}"
        )
    return lines


def _clock(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%fZ")


def _replay(
    events: list[asyncpg.Record], tickets: Mapping[int, tuple[str, int | None]]
) -> list[str]:
    problems = []
    state: dict[int, tuple[str, int | None]] = {}
    for e in events:
        t, agent, what = e["ticket_id"], e["agent_id"], e["event"]
        now = state.get(t, ("unassigned", None))
        where = f"event {e['id']} (epoch {e['epoch']}): {what} ticket {t} by agent {agent}"
        if what == "assigned":
            if now[0] != "unassigned":
                problems.append(f"(2) {where} while {now[0]} to agent {now[1]}")
            state[t] = ("assigned", agent)
        elif what == "sold":
            if now != ("assigned", agent):
                problems.append(f"(2) {where} while {now[0]} (agent {now[1]})")
            state[t] = ("sold", agent)
        elif what == "released":
            if now != ("assigned", agent):
                problems.append(f"(2) {where} while {now[0]} (agent {now[1]})")
            state[t] = ("unassigned", None)
        elif what == "deleted":
            if now[0] != "unassigned":
                problems.append(f"(2) {where} while {now[0]} (agent {now[1]})")
            state[t] = ("deleted", None)
    for t, replayed in sorted(state.items()):
        stored = tickets.get(t, ("deleted", None))
        if replayed != stored:
            problems.append(
                f"(2) ticket {t}: the audit log ends at {replayed}, tickets has {stored}"
            )
    for t, stored in sorted(tickets.items()):
        if t not in state and stored[0] != "unassigned":
            problems.append(f"(2) ticket {t} is {stored} without any event")
    return problems


async def _constraints(db: asyncpg.Connection) -> list[str]:
    problems = []
    # The table's CHECKs, evaluated row by row: a constraint added NOT VALID, disabled or
    # dropped by a drill must not have let a broken row in. Keep in sync with the migration.
    broken = await db.fetch(
        """
        SELECT id, status, agent_id, assigned_at, sold_at FROM tickets
        WHERE NOT (status IN ('unassigned', 'assigned', 'sold'))
           OR (status = 'unassigned') <> (agent_id IS NULL)
           OR (status = 'unassigned') <> (assigned_at IS NULL)
           OR (status = 'sold') <> (sold_at IS NOT NULL)
        LIMIT 10
        """
    )
    problems += [f"(4) ticket breaks a CHECK: {dict(r)}" for r in broken]
    over = await db.fetch(
        """
        SELECT a.id, a.capacity, a.is_active, count(t.id) AS held
        FROM agents a JOIN tickets t ON t.agent_id = a.id AND t.status = 'assigned'
        GROUP BY a.id
        HAVING count(t.id) > CASE WHEN a.is_active THEN a.capacity ELSE 0 END
        """
    )
    problems += [f"(4) agent holds more than allowed: {dict(r)}" for r in over]
    return problems


def _prefix(tickets: Mapping[int, tuple[str, int | None]]) -> list[str]:
    taken = [t for t, (status, _) in tickets.items() if status != "unassigned"]
    waiting = [t for t, (status, _) in tickets.items() if status == "unassigned"]
    if not taken or not waiting:
        return []
    first_waiting = min(waiting)
    skipped = sorted(t for t in taken if t > first_waiting)
    if not skipped:
        return []
    return [
        f"(5) ticket {first_waiting} is still unassigned while {len(skipped)} newer ones left"
        f" the queue: {skipped[:10]}"
    ]


async def _one_lock_holder(db: asyncpg.Connection, lock_key: int) -> list[str]:
    holders = await lock_holders(db, lock_key)
    if len(holders) > 1:
        return [f"(6) {len(holders)} sessions hold the dispatcher lock: {holders}"]
    return []


async def lock_holders(db: asyncpg.Connection, lock_key: int = LOCK_KEY) -> list[int]:
    """Backend pids holding (granted) the dispatcher's advisory lock."""
    rows = await db.fetch(
        """
        SELECT pid FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND database = (
            SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint) = $1
        """,
        lock_key,
    )
    return sorted(r["pid"] for r in rows)


async def lock_waiters(db: asyncpg.Connection, lock_key: int = LOCK_KEY) -> list[int]:
    """Backend pids waiting for the dispatcher's advisory lock (the standbys)."""
    rows = await db.fetch(
        """
        SELECT pid FROM pg_locks
        WHERE locktype = 'advisory' AND NOT granted AND database = (
            SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint) = $1
        """,
        lock_key,
    )
    return sorted(r["pid"] for r in rows)
