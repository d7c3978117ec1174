"""The OpenAPI document and the docs page: valid, complete, served by this app alone.

Validation is offline: schemathesis ships the OpenAPI 3.0/3.1 meta-schemas, and jsonschema_rs
carries the JSON Schema drafts' own.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import jsonschema_rs
import pydantic
import pytest
import schemathesis
from aiohttp import web
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR, OPENAPI_31_VALIDATOR

from web.errors import error_middleware
from web.handlers import docs
from web.openapi import build_document, document_bytes, downgrade_to_30
from web.routes import OPERATIONS
from web.routing import Operation, add_operations, json_response, parse_body, path_id
from web.schemas import Request

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# As the router spells them: `{name:regex}` is `{name}` there.
DOCS_PATHS = {re.sub(r"\{(\w+):[^}]*\}", r"{\1}", op.path) for op in docs.OPERATIONS}


async def fetch_document(client: Any) -> dict[str, Any]:
    response = await client.get(docs.SCHEMA_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


def operations_of(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


# --- the document --------------------------------------------------------------------------


async def test_the_document_is_valid_openapi_31(client):
    document = await fetch_document(client)
    assert document["openapi"] == "3.1.0"
    OPENAPI_31_VALIDATOR.validate(document)
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    loaded = schemathesis.openapi.from_dict(document, config=SchemathesisConfig())
    loaded.validate()
    results = list(loaded.get_all_operations())
    failed = [result.err() for result in results if isinstance(result, Err)]
    assert not failed, failed
    labels = [result.ok().label for result in results if isinstance(result, Ok)]
    assert len(labels) == len(operations_of(document))


async def test_the_document_says_its_media_type_when_asked(client):
    response = await client.get(
        docs.SCHEMA_PATH, headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    assert response.status == 200
    assert response.content_type == "application/vnd.oai.openapi+json"
    assert (await response.read()) == document_bytes("3.1")


async def test_every_route_is_documented_and_nothing_else(client):
    document = await fetch_document(client)
    routed = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.resource.canonical not in DOCS_PATHS
    }
    # HEAD is GET without the body (RFC 9110), served beside every GET and documented by it.
    heads = {path for method, path in routed if method == "HEAD"}
    assert heads == {path for method, path in routed if method == "GET"}
    assert {(m, p) for m, p in routed if m != "HEAD"} == set(operations_of(document))
    assert not any(path in document["paths"] for path in DOCS_PATHS)


async def test_operations_carry_ids_tags_security_and_their_errors(client):
    document = await fetch_document(client)
    ids = []
    for (method, path), operation in operations_of(document).items():
        table_entry = next(op for op in OPERATIONS if (op.method, op.path) == (method, path))
        ids.append(operation["operationId"])
        assert operation["summary"] == table_entry.summary
        assert operation["tags"] == [table_entry.tag]
        statuses = set(operation["responses"])
        assert {"500", "503"} <= statuses
        assert any(status.startswith("2") for status in statuses), (method, path)
        if table_entry.auth:
            assert operation["security"] == [{"tokenAuth": []}]
            assert {"401", "403"} <= statuses
        else:
            assert operation["security"] == []
            assert "401" not in statuses
        if table_entry.body is not None:
            assert operation["requestBody"]["required"] is True
            assert {"400", "408", "413", "415"} <= statuses
        if "{" in path:
            assert "404" in statuses
            for parameter in operation["parameters"]:
                if parameter["in"] == "path":
                    assert parameter["schema"] == {"type": "integer", "minimum": 1}
    assert len(ids) == len(set(ids))
    login = operations_of(document)[("POST", "/api/auth-token/")]
    assert "429" in login["responses"]
    scheme = document["components"]["securitySchemes"]["tokenAuth"]
    assert scheme["type"] == "apiKey" and scheme["in"] == "header"
    assert scheme["name"] == "Authorization"


async def test_error_responses_reference_the_error_body(client):
    document = await fetch_document(client)
    components = document["components"]
    for name, response in components["responses"].items():
        schema = response["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, name
        assert "X-Request-ID" in response["headers"]
    for name in ("TooManyRequests", "ServiceUnavailable"):
        assert "Retry-After" in components["responses"][name]["headers"]
    assert components["schemas"]["ErrorBody"]["required"] == ["error"]


def test_the_document_is_built_once():
    assert document_bytes("3.1") is document_bytes("3.1")
    assert json.loads(document_bytes("3.1")) == build_document(OPERATIONS)


# --- the generator, on a table of its own -----------------------------------------------------


class Item(Request):
    name: str = pydantic.Field(max_length=10)


class ItemQuery(Request):
    limit: int = pydantic.Field(default=10, ge=1, description="At most this many.")
    kind: str | None = None


class ItemOut(pydantic.BaseModel):
    id: int
    name: str
    note: str | None


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


async def _other(request: web.Request) -> web.Response:
    return web.Response()


def test_bodies_queries_and_responses_come_from_the_models():
    table = [
        Operation(
            "POST",
            "/items/",
            _handler,
            summary="create",
            tag="items",
            body=Item | list[Item],
            responses={201: list[ItemOut]},
        ),
        Operation("GET", "/items/", _other, summary="list", tag="items", query=ItemQuery),
        Operation("PUT", "/items/{id}/", _other, summary="replace", tag="items", body=Item),
    ]
    document = build_document(table, version="1")
    OPENAPI_31_VALIDATOR.validate(document)
    create = document["paths"]["/items/"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "anyOf": [
            {"$ref": "#/components/schemas/Item"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
        ]
    }
    created = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"type": "array", "items": {"$ref": "#/components/schemas/ItemOut"}}
    assert create["responses"]["409"] == {"$ref": "#/components/responses/Conflict"}
    listing = document["paths"]["/items/"]["get"]
    assert listing["parameters"] == [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "At most this many.",
            "schema": {"type": "integer", "minimum": 1, "default": 10},
        },
        {"name": "kind", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    assert "413" not in listing["responses"] and "404" not in listing["responses"]
    # The shared handler names stay operation ids; one serving two routes would not.
    assert create["operationId"] == "_handler"
    assert document["paths"]["/items/{id}/"]["put"]["operationId"] == "put_items_id"
    # Only what the paths reach is kept: the query model is no component.
    assert set(document["components"]["schemas"]) == {"ErrorBody", "Item", "ItemOut"}


def test_a_repeated_method_and_path_is_refused():
    twice = [Operation("GET", "/x/", _handler, summary="x", tag="x")] * 2
    with pytest.raises(ValueError, match="repeats"):
        build_document(twice)


def test_the_30_rendition_rewrites_what_30_cannot_say():
    schema = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "b": {"anyOf": [{"$ref": "#/components/schemas/B"}, {"type": "null"}]},
            "c": {"const": "x"},
            "d": {"type": "integer", "exclusiveMinimum": 0},
            "e": {"type": ["string", "null"], "examples": ["one"]},
            "f": {"anyOf": [{"enum": ["p", "q"], "type": "string"}, {"type": "null"}]},
        },
    }
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {},
        "components": {"schemas": {"A": schema, "B": {"type": "object"}}},
    }
    converted = downgrade_to_30(document)
    OPENAPI_30_VALIDATOR.validate(converted)
    properties = converted["components"]["schemas"]["A"]["properties"]
    assert properties["a"] == {"type": "integer", "nullable": True}
    assert properties["b"] == {"nullable": True, "allOf": [{"$ref": "#/components/schemas/B"}]}
    assert properties["c"] == {"enum": ["x"]}
    assert properties["d"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert properties["e"] == {"type": "string", "nullable": True, "example": "one"}
    assert properties["f"] == {"enum": ["p", "q", None], "type": "string", "nullable": True}
    assert document["openapi"] == "3.1.0"  # the original is left alone


# --- the docs page ---------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every URL the page points at: src, href, and the schema it hands Swagger UI."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "data-openapi-url") and value:
                self.urls.append(value)


async def test_the_docs_page_loads_everything_from_this_app(client):
    response = await client.get(docs.DOCS_PATH)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert not re.search(r"(?i)https?://", page), "an absolute URL"
    assert "validatorUrl: null" in page  # Swagger UI's default validator is an online service
    links = _Links()
    links.feed(page)
    assert len(links.urls) >= 3
    for url in links.urls:
        target = urljoin(docs.DOCS_PATH, url)
        assert urlsplit(target).netloc == ""
        asset = await client.get(target)
        assert asset.status == 200, target
        assert await asset.read()
    ui_schema = urljoin(docs.DOCS_PATH, "openapi-3.0.json")
    assert ui_schema in {urljoin(docs.DOCS_PATH, url) for url in links.urls}


async def test_swagger_ui_gets_the_same_document_as_30(client):
    response = await client.get(docs.UI_SCHEMA_PATH)
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.0.3"
    OPENAPI_30_VALIDATOR.validate(document)
    original = await fetch_document(client)
    assert {key: op["operationId"] for key, op in operations_of(document).items()} == {
        key: op["operationId"] for key, op in operations_of(original).items()
    }
    text = json.dumps(document)
    assert '"const"' not in text and '{"type": "null"}' not in text
    assert not re.search(r'"type": \[', text)


@pytest.mark.parametrize(
    "name",
    ["index.html", "swagger-initializer.js", "swagger-ui-es-bundle.js", "..%2F__init__.py", "x.js"],
)
async def test_only_the_listed_assets_are_served(client, name):
    response = await client.get(docs.STATIC_PATH + name)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


# --- request handling the document relies on ---------------------------------------------


class Numbers(Request):
    model_config = pydantic.ConfigDict(strict=True)
    count: int


async def _echo(request: web.Request) -> web.Response:
    body = await parse_body(request, Numbers)
    return json_response({"id": path_id(request), "count": body.count})


async def _echo_get(request: web.Request) -> web.Response:
    return json_response({"id": path_id(request)})


@pytest.fixture
async def echo(aiohttp_client):
    app = web.Application(middlewares=[error_middleware])
    add_operations(
        app,
        [
            Operation("POST", "/things/special/", _echo_get, summary="s", tag="t"),
            Operation("PUT", "/things/{id}/", _echo, summary="e", tag="t", body=Numbers),
        ],
    )
    return await aiohttp_client(app)


@pytest.mark.parametrize("literal", ["42", "42.0", "4.2e1", "420E-1"])
async def test_a_whole_json_number_is_an_integer(echo, literal):
    response = await echo.put(
        "/things/7/",
        data=f'{{"count": {literal}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200
    assert await response.json() == {"id": 7, "count": 42}


@pytest.mark.parametrize("literal", ["42.5", "1e400", "1e999999999", '"42"', "true"])
async def test_other_numbers_and_types_are_not_integers(echo, literal):
    response = await echo.put(
        "/things/7/",
        data=f'{{"count": {literal}}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid"


async def test_an_id_segment_takes_digits_only(echo):
    # Not ticket "special": the fixed route answers, and a wrong method there is a 405.
    wrong_method = await echo.put("/things/special/", json={"count": 1})
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert (await wrong_method.json())["error"] == "method_not_allowed"
    assert (await echo.put("/things/abc/", json={"count": 1})).status == 404


async def test_an_undeclared_method_is_a_405_naming_the_allowed_ones(client):
    response = await client.request("TRACE", "/api/auth-token/")
    assert response.status == 405
    assert {method.strip() for method in response.headers["Allow"].split(",")} == {"POST", "DELETE"}
    assert (await response.json())["error"] == "method_not_allowed"
