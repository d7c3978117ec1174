"""TicketQueue against the obvious model: a sorted set of ids.

The queue's speed comes from a consumed prefix and a lazy cut, so these tests drive it past
the compaction threshold and mix out-of-order inserts (late commits, releases) with takes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.ticket_queue import TicketQueue

ids = st.integers(min_value=1, max_value=20_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(min_value=0, max_value=3000)),
        st.tuples(st.just("add"), st.lists(ids, max_size=40)),
        st.tuples(st.just("add_run"), st.integers(min_value=1, max_value=6000)),
        st.tuples(st.just("discard"), ids),
        st.tuples(st.just("drop"), st.integers(min_value=0, max_value=50)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(initial=st.integers(min_value=0, max_value=9000), steps=operations)
def test_the_queue_behaves_as_a_sorted_set(initial: int, steps: list[tuple[str, object]]) -> None:
    queue = TicketQueue(range(1, initial + 1))
    model = set(range(1, initial + 1))
    for kind, argument in steps:
        if kind == "take":
            assert isinstance(argument, int)
            expected = tuple(sorted(model)[:argument])
            assert queue.take_lowest(argument) == expected
            model.difference_update(expected)
        elif kind == "add":
            assert isinstance(argument, list)
            queue.add_missing(argument)
            model.update(argument)
        elif kind == "add_run":  # a refill: a block above everything queued
            assert isinstance(argument, int)
            start = max(model, default=0) + 1
            queue.add_missing(range(start, start + argument))
            model.update(range(start, start + argument))
        elif kind == "discard":
            assert isinstance(argument, int)
            queue.discard(argument)
            model.discard(argument)
        else:
            assert isinstance(argument, int)
            expected_dropped = sorted(model)[max(len(model) - argument, 0) :] if argument else []
            assert queue.drop_highest(argument) == expected_dropped
            model.difference_update(expected_dropped)
        assert list(queue) == sorted(model)
        assert len(queue) == len(model)
    for probe in range(0, 20_002, 997):
        assert (probe in queue) == (probe in model)
    if model:
        assert queue.highest() == max(model)


def test_an_empty_queue_has_no_highest_and_takes_nothing() -> None:
    queue = TicketQueue()
    assert queue.take_lowest(15) == ()
    assert queue.drop_highest(3) == []
    try:
        queue.highest()
    except IndexError:
        pass
    else:
        raise AssertionError("highest() of an empty queue must raise")


def test_a_late_id_below_the_taken_prefix_goes_out_next() -> None:
    """A late commit: an id lower than tickets already taken is the next one out."""
    queue = TicketQueue(range(10, 10_010))
    assert queue.take_lowest(5000) == tuple(range(10, 5010))  # far enough to compact
    queue.add_missing([3, 7000, 5])
    assert queue.take_lowest(3) == (3, 5, 5010)
    assert 7000 in queue and 4 not in queue
    assert len(queue) == 10_000 - 5000 + 2 - 3
