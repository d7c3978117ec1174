"""json_response writes plain data with orjson: byte for byte what pydantic would write."""

from __future__ import annotations

import datetime as dt
import enum

import pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

from web.routing import json_response


class Colour(enum.Enum):
    RED = "red"


class Item(pydantic.BaseModel):
    name: str
    at: dt.datetime


def pydantic_bytes(data: object) -> bytes:
    return pydantic.TypeAdapter(type(data)).dump_json(data)


def body(data: object) -> bytes:
    response = json_response(data)
    assert response.content_type == "application/json"
    assert isinstance(response.body, bytes)
    return response.body


zones = st.sampled_from(
    [
        None,
        dt.UTC,
        dt.timezone(dt.timedelta(hours=5, minutes=30)),
        dt.timezone(-dt.timedelta(hours=8)),
    ]
)
datetimes = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    zones,
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | datetimes
    | st.dates()
    | st.just(Colour.RED)
    | st.builds(Item, name=st.text(), at=datetimes)
)
json_like = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), json_like, max_size=5) | st.lists(json_like, max_size=5))
def test_plain_data_is_written_as_pydantic_writes_it(data: object) -> None:
    assert body(data) == pydantic_bytes(data)


def test_a_fetch_answer_and_what_orjson_cannot_write_alone() -> None:
    created = dt.datetime(2026, 11, 27, 21, 18, 21, 123456, tzinfo=dt.UTC)
    fetch = {
        "tickets": [
            {
                "id": 7,
                "title": "é\u2028<>",
                "status": "assigned",
                "agent": 3,
                "created_at": created,
                "assigned_at": created.replace(microsecond=0),
                "sold_at": None,
            }
        ]
    }
    beyond_64_bits = {"n": 2**70, "keys": {1: "int key", 2.5: "float key"}}

    assert body(fetch) == pydantic_bytes(fetch)
    assert b'"created_at":"2026-11-27T21:18:21.123456Z"' in body(fetch)
    assert body(beyond_64_bits) == pydantic_bytes(beyond_64_bits)
    assert body({"k": {1: "x"}}) == b'{"k":{"1":"x"}}'
