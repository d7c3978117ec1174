"""How the dispatcher's batch crosses the wire cheaply: its arrays as matrices, its returned
timestamps as text.

Both are on the batch's critical path. The next batch is encoded after the previous
result came back, and that result is decoded before the writer runs again, while the leader's
backend waits. They also take the server's CPU, which every request shares. Measured with
one connection to the embedded server (the statement's shape, 367 tickets each way, the size
of a batch at 100 connections):
- asyncpg checks each element of a one-dimensional array against `collections.abc`
  (`_get_array_shape`, ~0.14 µs an element in Python's ABC machinery). For a matrix it checks
  only the rows and the first row's elements. Four arrays of 370 ids: 300 µs above an empty
  call as lists, 140 µs as matrices;
- asyncpg decodes a binary `timestamptz` in Python (~0.6 µs each). The same 367 rows took
  600 µs with two binary timestamps and 240 µs with them as text. `fromisoformat` then reads
  one in 0.06 µs, in each caller's own task, after the next batch has gone out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime


def as_matrix(values: Sequence[int]) -> list[list[int | None]]:
    """`values` as the rows of a near-square matrix, padded at the end with None (NULL).
    Row-major order is `values`' order, so `unnest` gives them back in order, then the pads."""
    count = len(values)
    if count == 0:
        return [[]]
    width = math.isqrt(count - 1) + 1
    padded: list[int | None] = [*values, *([None] * (-count % width))]
    return [padded[start : start + width] for start in range(0, len(padded), width)]


# What asyncpg's binary codec gives for them: naive, unlike every finite value.
_INFINITE = {"infinity": datetime.max, "-infinity": datetime.min}


def timestamp_from_text(text: str) -> datetime:
    """A `timestamptz` as the leader's session prints it (DateStyle ISO, TimeZone UTC), as
    the datetime asyncpg's binary codec would have given: aware, in UTC."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        if text in _INFINITE:
            return _INFINITE[text]
        raise
