"""The flat route table and the request-parsing helpers handlers share.

Each `Operation` carries what the OpenAPI document needs (models, statuses, auth), so the
document is generated from the same models the handlers validate with.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import orjson
import pydantic
import structlog
from aiohttp import web

from web.auth import Principal
from web.errors import (
    BadRequest,
    NotFound,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
    validation_detail,
)
from web.keys import AUTHENTICATOR, SETTINGS
from web.middleware import REQUEST_ID, USER_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
Model = TypeVar("Model", bound=pydantic.BaseModel)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    # A pydantic model class or any type a TypeAdapter accepts (e.g. `A | list[A]`).
    body: Any = None
    query: type[pydantic.BaseModel] | None = None
    # status -> response model (None: no body); error statuses are added by the generator.
    responses: Mapping[int, Any] = field(default_factory=dict)
    auth: bool = True
    description: str = ""


# A bare `{name}` path segment; one with its own pattern (`{name:regex}`) is left alone.
_BARE_PARAMETER = re.compile(r"\{(\w+)\}")


def add_operations(app: web.Application, operations: list[Operation]) -> None:
    """Register each operation. A bare `{name}` segment is an id and matches digits only,
    as the OpenAPI document says: `/api/tickets/fetch_tickets/` is then never mistaken for
    ticket "fetch_tickets", so a wrong method there is a 405 (with Allow), not a 404.
    ASCII digits: `\\d` would match any script's digits, which int() reads as well."""
    for operation in operations:
        path = _BARE_PARAMETER.sub(r"{\1:[0-9]+}", operation.path)
        if operation.method == "GET":
            # With HEAD, as HTTP asks of a general-purpose server (RFC 9110, 9.1) and aiohttp's
            # add_get does by default: load balancers and uptime checks probe with HEAD.
            app.router.add_get(path, operation.handler)
        else:
            app.router.add_route(operation.method, path, operation.handler)


async def principal(request: web.Request) -> Principal:
    """The authenticated caller (401 otherwise), also recorded for the access log."""
    caller = await request.app[AUTHENTICATOR].principal(request)
    request[USER_ID] = caller.user_id
    return caller


_JSON_TYPES = ("application/json", "application/octet-stream")
_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def _adapter(kind: Any) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = pydantic.TypeAdapter(kind)
    return adapter


def _json_number(literal: str) -> int | float:
    """A JSON number with a fraction or exponent: an int when its value is whole.

    JSON has one number type and JSON Schema's `integer` is any whole number, so `42.0` and
    `4.2e1` are the integer 42 (strict models would otherwise refuse them as floats).
    """
    number = decimal.Decimal(literal)
    if number.is_zero():
        return 0
    # The exponent bound keeps `1e999999999` from becoming an enormous int.
    if number.is_finite() and abs(number.adjusted()) <= 40 and number == number.to_integral_value():
        return int(number)
    return float(literal)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that names each key once. JSON leaves a repeated key's meaning open and
    Python keeps the last: `{"ticket_ids": [1], "ticket_ids": [2]}` sold 2, where a proxy or
    a log reading the first would say 1. Refused, at any depth, rather than guessed."""
    built = dict(pairs)
    if len(built) != len(pairs):  # only then is it worth finding which key
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return built


# One decoder for every request: json.loads with an option builds a new one per call. The
# pairs hook costs a sell body ~0.3 µs (timeit: 1.6 -> 1.8 µs), mostly the decoder's own
# pairs path; 100 tickets in a batch 22 µs more.
_JSON = json.JSONDecoder(parse_float=_json_number, object_pairs_hook=_json_object)
# How much of a repeated key the error quotes back.
_KEY_SHOWN = 100


async def _read_body(request: web.Request) -> bytes:
    """The whole body, within BODY_READ_TIMEOUT_S (408 otherwise)."""
    # Almost every body came with its headers: only one still arriving pays for a timer.
    if request.content.is_eof():
        return await request.read()
    timeout_s = request.app[SETTINGS].body_read_timeout_s
    try:
        # A client that stops sending, or aiohttp's parser after a bad chunk size mid-body
        # (it never ends the body then), would otherwise hold this handler for ever.
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        log.info(
            "body_read_timeout",
            path=request.path,
            timeout_s=timeout_s,
            request_id=request.get(REQUEST_ID),
        )
        raise RequestTimeout(f"The request body did not arrive within {timeout_s:g} s.") from None


@overload
async def parse_body(request: web.Request, kind: type[T]) -> T: ...
@overload
async def parse_body(request: web.Request, kind: Any) -> Any: ...


async def parse_body(request: web.Request, kind: Any) -> Any:
    """The JSON body validated as `kind` (a model, or any type pydantic validates: a union
    of models, `Any`); 400/408/413/415 with a clear detail otherwise."""
    content_type = request.content_type
    # aiohttp reports a missing Content-Type as application/octet-stream: accept that as JSON.
    json_like = content_type in _JSON_TYPES or content_type.endswith("+json")
    if request.body_exists and not json_like:
        raise UnsupportedMediaType(
            f"Send JSON (Content-Type: application/json), not {content_type}."
        )
    try:
        raw = await _read_body(request)
    except web.RequestPayloadError:
        # aiohttp could not undo the body's Content-Encoding (it is not gzip or deflate data
        # after all): the client's mistake, like broken JSON.
        raise BadRequest(
            "The request body could not be decoded as its Content-Encoding says."
        ) from None
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    try:
        # As json.loads(bytes) would: UTF-8, -16 or -32 by the first bytes.
        data = _JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    except _DuplicateKey as duplicate:
        key = duplicate.key
        shown = json.dumps(
            key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "…", ensure_ascii=False
        )
        raise BadRequest(
            f"The request body names the key {shown} more than once in one object;"
            " send each key once."
        ) from None
    except RecursionError:
        # The decoder recurses per level; its message would only name Python's stack.
        raise BadRequest("The request body is nested too deeply to read.") from None
    except ValueError:
        # int() refuses a literal of over 4,300 digits (Python's guard against quadratic
        # conversion): a client's input, not a server error.
        raise BadRequest("The request body holds a number too long to read.") from None
    try:
        return _adapter(kind).validate_python(data)
    except pydantic.ValidationError as error:
        raise ValidationFailed(validation_detail(error)) from None


# A query's whole numbers in plain decimal digits: pydantic reads a string as Python's int()
# does, which takes "1_0" for 10, "+1" and non-ASCII digits.
_DECIMAL = re.compile(r"[0-9]{1,19}")
_WHOLE_NUMBERS = (int, int | None)


def parse_query(request: web.Request, model: type[Model]) -> Model:
    """The query string as `model`: each parameter at most once, whole numbers as digits."""
    query = request.query
    repeated = sorted({name for name in query if len(query.getall(name)) > 1})
    if repeated:
        raise ValidationFailed(
            [
                {"field": name, "message": "Given more than once.", "type": "repeated"}
                for name in repeated
            ]
        )
    values = dict(query)
    loose = [
        name
        for name, field in model.model_fields.items()
        if field.annotation in _WHOLE_NUMBERS
        and name in values
        and not _DECIMAL.fullmatch(values[name])
    ]
    if loose:
        raise ValidationFailed(
            [
                {
                    "field": name,
                    "message": "Must be a whole number in decimal digits.",
                    "type": "int_parsing",
                }
                for name in loose
            ]
        )
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as error:
        raise ValidationFailed(validation_detail(error)) from None


_BIGINT_MAX = 2**63 - 1


def path_id(request: web.Request, name: str = "id") -> int:
    """A positive integer path parameter in its one spelling (no sign, no leading zero, ASCII
    digits, within bigint); anything else is a 404: no such resource exists."""
    raw = request.match_info[name]
    if not _DECIMAL.fullmatch(raw) or raw[0] == "0" or int(raw) > _BIGINT_MAX:
        raise NotFound()
    return int(raw)


# What orjson does not know (pydantic models inside plain data, and the rest) is handed to
# pydantic, whose output it embeds as is: the bytes are the same as pydantic's throughout.
def _pydantic_json(value: Any) -> orjson.Fragment:
    return orjson.Fragment(_adapter(type(value)).dump_json(value))


# Z for UTC and str keys for others, as pydantic writes them.
_ORJSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def json_response(data: Any, *, status: int = 200) -> web.Response:
    """Serialise models (or plain data containing them) as JSON.

    Plain data goes through orjson, a third of pydantic's cost on a fetch's fifteen tickets
    (their datetimes are half of it); models through pydantic's own encoder."""
    if isinstance(data, pydantic.BaseModel):
        body = data.model_dump_json().encode()
    else:
        try:
            body = orjson.dumps(data, default=_pydantic_json, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits, which pydantic writes
            body = _adapter(type(data)).dump_json(data)
    return web.Response(body=body, status=status, content_type="application/json")
