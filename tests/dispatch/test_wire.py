"""The batch's wire shapes (storage/wire.py): matrices in, timestamps as text out. Each must
give back exactly what the plain shapes did."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.wire import as_matrix, timestamp_from_text
from tests.support.in_process import AppServer
from web.keys import DISPATCHER

FETCH = "/api/tickets/fetch_tickets/"


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3000))
def test_a_matrix_holds_the_values_in_order_then_only_pads(values):
    rows = as_matrix(values)
    widths = {len(row) for row in rows}
    assert len(widths) == 1  # PostgreSQL refuses ragged arrays
    flat = [value for row in rows for value in row]
    assert flat[: len(values)] == values
    padding = flat[len(values) :]
    assert padding == [None] * len(padding) and len(padding) < max(widths | {1})
    # What asyncpg checks one by one: the rows and the first row's elements.
    assert len(rows) + len(rows[0]) <= 2 * math.isqrt(len(values)) + 3


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 5, 15, 16, 17, 99, 367, 1000])
async def test_unnest_gives_a_matrix_pair_back_as_the_pairs_it_was_built_from(db, count):
    ids = list(range(10**12, 10**12 + count))
    agents = [i % 7 for i in range(count)]
    rows = await db.fetch(
        "SELECT id, agent FROM unnest($1::bigint[], $2::bigint[]) AS d(id, agent)"
        " WHERE id IS NOT NULL",
        as_matrix(ids),
        as_matrix(agents),
    )
    assert [(r["id"], r["agent"]) for r in rows] == list(zip(ids, agents, strict=True))


TIMESTAMPS = [
    "2026-11-28 01:02:03.123456+00",
    "2026-11-28 01:02:03.120000+00",  # printed as .12
    "2026-11-28 01:02:03+00",  # printed without a fraction
    "2026-11-28 01:02:03.000001+00",
    "2026-03-29 01:30:00+01",  # not UTC on the way in
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "infinity",
    "-infinity",
]


async def test_text_timestamps_read_as_the_binary_codec_reads_them(db):
    await db.execute("SET DateStyle = 'ISO'; SET TimeZone = 'UTC'")
    rows = await db.fetch(
        "SELECT t AS binary, t::text AS text FROM unnest($1::text[]::timestamptz[]) AS u(t)",
        TIMESTAMPS,
    )
    assert len(rows) == len(TIMESTAMPS)
    for row in rows:
        read = timestamp_from_text(row["text"])
        assert read == row["binary"] and read.tzinfo is row["binary"].tzinfo, row["text"]
    assert rows[0]["binary"].tzinfo is UTC


def test_text_that_is_no_timestamp_is_an_error():
    with pytest.raises(ValueError):
        timestamp_from_text("28/11/2026 01:02:03.5 UTC")


@pytest.fixture
async def odd_session_defaults(database_url, db):
    """A database whose sessions print timestamps unlike ISO UTC, set before any server
    connects: the leader's session must not inherit it."""
    name = await db.fetchval("SELECT current_database()")
    await db.execute(f"ALTER DATABASE {name} SET DateStyle = 'SQL, DMY'")
    await db.execute(f"ALTER DATABASE {name} SET TimeZone = 'Asia/Kolkata'")


async def test_fetched_tickets_read_as_the_ticket_endpoint_reads_them(
    odd_session_defaults, settings, aiohttp_client, make, db
):
    from web.app import create_app

    ids = await make.tickets(4)
    await db.execute(
        "UPDATE tickets SET created_at = v.at FROM unnest($1::bigint[], $2::timestamptz[])"
        " AS v(id, at) WHERE tickets.id = v.id",
        ids,
        [
            datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC),
            datetime(2026, 11, 28, 1, 2, 3, 120000, tzinfo=UTC),
            datetime(2026, 11, 28, 1, 2, 3, 1, tzinfo=UTC),
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        ],
    )
    client = await aiohttp_client(AppServer(create_app(settings)))
    await client.app[DISPATCHER].leading.wait()
    agent, admin = await make.agent(capacity=4), await make.admin()

    response = await client.post(FETCH, headers=agent.headers)
    assert response.status == 200, await response.text()
    fetched = (await response.json())["tickets"]
    assert [t["id"] for t in fetched] == ids
    for ticket in fetched:
        shown = await client.get(f"/api/tickets/{ticket['id']}/", headers=admin.headers)
        assert shown.status == 200
        assert ticket == await shown.json()
    assert [t["created_at"] for t in fetched] == [
        "2026-11-28T01:02:03Z",
        "2026-11-28T01:02:03.120000Z",
        "2026-11-28T01:02:03.000001Z",
        "2026-03-29T00:30:00Z",
    ]
