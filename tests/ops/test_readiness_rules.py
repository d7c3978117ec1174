"""`assess`: readiness from the process's view and the database's, one row per situation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from web.handlers.health import Leader, LeadershipRecord, Readiness, assess

SINCE = datetime(2024, 6, 1, tzinfo=UTC)
ME = "host:1:8000"


def record(*, epoch: int = 7, holder_pid: int | None = 100, lock_pids=(100,)) -> LeadershipRecord:
    return LeadershipRecord(
        epoch=epoch, holder=ME, holder_pid=holder_pid, since=SINCE, lock_pids=frozenset(lock_pids)
    )


CONFIRMED = Leader(identity=ME, epoch=7, since=SINCE, pid=100)
TAKING_OVER = Leader(identity=None, epoch=None, since=None, pid=200)


@pytest.mark.parametrize(
    ("role", "epoch", "seen", "expected"),
    [
        pytest.param(
            "leader",
            7,
            record(),
            Readiness(
                ready=True, role="leader", reason=None, leader=CONFIRMED, database="ok", backlog=5
            ),
            id="leader-confirmed",
        ),
        pytest.param(
            "standby",
            None,
            record(),
            Readiness(
                ready=False,
                role="standby",
                reason="not_leader",
                leader=CONFIRMED,
                database="ok",
                backlog=None,
            ),
            id="standby-names-the-leader",
        ),
        pytest.param(
            "starting",
            None,
            record(lock_pids=()),
            Readiness(
                ready=False,
                role="starting",
                reason="not_leader",
                leader=None,
                database="ok",
                backlog=None,
            ),
            id="starting-nobody-leads",
        ),
        pytest.param(
            "leader",
            7,
            record(lock_pids=()),
            Readiness(
                ready=False,
                role="leader",
                reason="lock_lost",
                leader=None,
                database="ok",
                backlog=5,
            ),
            id="leader-whose-lock-is-free",
        ),
        pytest.param(
            "leader",
            7,
            record(lock_pids=(200,)),
            Readiness(
                ready=False,
                role="leader",
                reason="lock_lost",
                leader=TAKING_OVER,
                database="ok",
                backlog=5,
            ),
            id="leader-whose-lock-another-session-took",
        ),
        pytest.param(
            "leader",
            7,
            record(epoch=8, holder_pid=200, lock_pids=(200,)),
            Readiness(
                ready=False,
                role="leader",
                reason="lock_lost",
                leader=Leader(identity=ME, epoch=8, since=SINCE, pid=200),
                database="ok",
                backlog=5,
            ),
            id="leader-fenced-by-a-newer-epoch",
        ),
        pytest.param(
            "leader",
            7,
            None,
            Readiness(
                ready=False,
                role="leader",
                reason="database_unavailable",
                leader=Leader(identity=ME, epoch=7, since=None, pid=None),
                database="unavailable",
                backlog=5,
            ),
            id="leader-without-database",
        ),
        pytest.param(
            "standby",
            None,
            None,
            Readiness(
                ready=False,
                role="standby",
                reason="database_unavailable",
                leader=None,
                database="unavailable",
                backlog=None,
            ),
            id="standby-without-database",
        ),
        pytest.param(
            "stopped",
            None,
            record(),
            Readiness(
                ready=False,
                role="stopped",
                reason="not_leader",
                leader=CONFIRMED,
                database="ok",
                backlog=None,
            ),
            id="stopped",
        ),
    ],
)
def test_assess(role, epoch, seen, expected):
    assert assess(role=role, identity=ME, epoch=epoch, queue_length=5, record=seen) == expected


def test_a_leader_whose_load_is_blocked_by_a_lock_is_not_ready():
    blocked = assess(
        role="leader", identity=ME, epoch=7, queue_length=5, record=record(), blocked=True
    )
    assert (blocked.ready, blocked.reason, blocked.leader) == (False, "blocked_by_lock", CONFIRMED)
    # Only a confirmed leader's block is the reason; anything else says what it said.
    standby = assess(
        role="standby", identity=ME, epoch=None, queue_length=5, record=record(), blocked=True
    )
    assert standby.reason == "not_leader"
