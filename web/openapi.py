"""The OpenAPI 3.1 document, generated from the route table.

Nothing here is written by hand per endpoint: paths, operation ids, tags and summaries come
from each `Operation`; request bodies, query parameters and success responses from the very
pydantic models the handlers validate and serialise with; the error responses from what the
shared request handling can answer (`web.routing`, `web.errors`):

- 400 when the operation reads a body or a query string (`invalid`, `bad_request`, …);
- 401 and 403 when it needs a token;
- 404 when its path carries an id (`web.routing.path_id`: a positive integer or 404);
- 409 on authenticated writes (a storage conflict, a dispatcher refusal, a sell rejection);
- 408, 413 and 415 when it reads a body;
- 429 where a password is checked: the login, and changing one's own password
  (`web.ratelimit.LoginThrottle`);
- 500 and 503 (with Retry-After) everywhere.

An `Operation.responses` entry for one of those statuses replaces the generic one.

Every schema lands in `components/schemas` once, named by pydantic (`Page_User_`, and
`X-Input` / `X-Output` when a model validates and serialises differently); components no
operation reaches are dropped.

The document is built once per process and cached (`document_bytes`). The Swagger UI
bundled with `swagger-ui-bundle` (4.15) renders OpenAPI 3.0.x only, so `downgrade_to_30`
derives a 3.0 rendition of the same document for it; `/api/schema/` serves the 3.1 original.
"""

from __future__ import annotations

import copy
import functools
import http
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, Literal

import pydantic

from web.routing import Operation
from web.schemas import ErrorBody

OPENAPI_VERSION = "3.1.0"
# Operations with this tag serve the documentation itself; the document does not describe them.
DOCS_TAG = "docs"
TOKEN_SCHEME = "tokenAuth"
SCHEMA_REF = "#/components/schemas/{model}"

_DESCRIPTION = """\
Hands support tickets to agents: strictly in creation order, never twice.

Authenticate with a key from `POST /api/auth-token/`, sent as `Authorization: Token <key>`
(or `Bearer <key>`). Every error has the shape `{"error": code, "detail": ...}`, sometimes
with more keys (a 409 sell rejection carries `rejected`); every response carries
`X-Request-ID`, worth quoting to support.
"""

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Keep in sync with web/handlers/auth.py: the operations LoginThrottle guards.
# Where a password is checked: the login, and a user's own new password (current_password).
_THROTTLED = frozenset(
    {("POST", "/api/auth-token/"), ("PUT", "/api/users/{id}/"), ("PATCH", "/api/users/{id}/")}
)
_PATH_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _error_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    if retry_after:
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="ErrorBody")}}},
    }


# status -> (component name, response); the codes are those web/errors.py and the handlers raise.
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: (
        "BadRequest",
        _error_response(
            "The request is malformed: `invalid` (some fields are invalid; `detail` lists each"
            " as `{field, message, type}`), `bad_request` (the body is not JSON, or an object in"
            " it names a key twice),"
            " or `invalid_credentials` (login)."
        ),
    ),
    401: (
        "NotAuthenticated",
        _error_response("`not_authenticated`: the token is missing, malformed or not valid."),
    ),
    403: (
        "PermissionDenied",
        _error_response("`permission_denied`: the caller's role may not do this."),
    ),
    404: ("NotFound", _error_response("`not_found`: no such resource.")),
    409: (
        "Conflict",
        _error_response(
            "`conflict`: the request conflicts with the current state. A rejected sell also"
            " carries `rejected`, a map of ticket id to reason; nothing was sold."
        ),
    ),
    408: (
        "RequestTimeout",
        _error_response(
            "`request_timeout`: the body did not arrive within `BODY_READ_TIMEOUT_S`; the"
            " connection is closed."
        ),
    ),
    413: (
        "PayloadTooLarge",
        _error_response("`payload_too_large`: the body exceeds the size limit (1 MiB)."),
    ),
    415: (
        "UnsupportedMediaType",
        _error_response("`unsupported_media_type`: send the body as `application/json`."),
    ),
    429: (
        "TooManyRequests",
        _error_response(
            "`too_many_requests`: too many failed password checks (logins, or `current_password`"
            " when changing one's own); retry after `Retry-After` seconds.",
            retry_after=True,
        ),
    ),
    500: (
        "InternalError",
        _error_response("`internal_error`: a bug; quote the X-Request-ID to support."),
    ),
    503: (
        "ServiceUnavailable",
        _error_response(
            "`unavailable`: the database or the dispatcher cannot answer right now; retrying"
            " after `Retry-After` seconds is safe. `GET /readyz` names the leader.",
            retry_after=True,
        ),
    ),
}

_HEADERS = {
    "RequestId": {
        "description": "This request's id (the caller's own `X-Request-ID` when it is sane).",
        "required": True,
        "schema": {"type": "string"},
    },
    "RetryAfter": {
        "description": "Whole seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
}

_SECURITY_SCHEMES = {
    TOKEN_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": (
            "`Token <key>` or `Bearer <key>`, with a key from `POST /api/auth-token/`."
        ),
    }
}


def error_statuses(operation: Operation) -> list[int]:
    """The error statuses the shared request handling can answer `operation` with."""
    statuses = {500, 503}
    if operation.body is not None or operation.query is not None:
        statuses.add(400)
    if operation.body is not None:
        statuses |= {408, 413, 415}
    if operation.auth:
        statuses |= {401, 403}
        if operation.method.upper() in _WRITES:
            statuses.add(409)
    if path_parameters(operation.path):
        statuses.add(404)
    if (operation.method.upper(), operation.path) in _THROTTLED:
        statuses.add(429)
    return sorted(statuses)


def path_parameters(path: str) -> list[str]:
    """The names of `{name}` (or `{name:regex}`) segments, in order."""
    return _PATH_PARAMETER.findall(path)


def _openapi_path(path: str) -> str:
    return _PATH_PARAMETER.sub(lambda match: "{" + match.group(1) + "}", path)


def _operation_ids(operations: Sequence[Operation]) -> list[str]:
    """Handler names; an operation whose handler serves several routes gets method and path."""
    names = [operation.handler.__name__ for operation in operations]
    ids = []
    for operation, name in zip(operations, names, strict=True):
        if names.count(name) > 1:
            slug = re.sub(r"[^A-Za-z0-9]+", "_", _openapi_path(operation.path)).strip("_")
            name = f"{operation.method.lower()}_{slug}"
        ids.append(name)
    duplicates = sorted({name for name in ids if ids.count(name) > 1})
    if duplicates:
        raise ValueError(f"the route table repeats method and path: {duplicates}")
    return ids


# One JSON-schema pass over every model, so shared models become one component each.
_Key = tuple[int, str]


def _schemas(operations: Sequence[Operation]) -> tuple[dict[_Key, Any], dict[str, Any]]:
    inputs: list[tuple[_Key, Literal["validation", "serialization"], pydantic.TypeAdapter[Any]]]
    inputs = [((-1, "error"), "serialization", pydantic.TypeAdapter(ErrorBody))]
    for index, operation in enumerate(operations):
        if operation.body is not None:
            inputs.append(((index, "body"), "validation", pydantic.TypeAdapter(operation.body)))
        if operation.query is not None:
            inputs.append(((index, "query"), "validation", pydantic.TypeAdapter(operation.query)))
        for status, model in operation.responses.items():
            if model is not None:
                adapter = pydantic.TypeAdapter(model)
                inputs.append(((index, f"response {status}"), "serialization", adapter))
    by_key, definitions = pydantic.TypeAdapter.json_schemas(inputs, ref_template=SCHEMA_REF)
    return {key: schema for (key, _mode), schema in by_key.items()}, definitions.get("$defs", {})


def _resolve(schema: Mapping[str, Any], components: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return components[ref.rsplit("/", 1)[1]]
    return schema


def _without_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`X | None` as a query parameter is X, optional: a query string cannot carry null."""
    schema = dict(schema)
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [branch for branch in branches if branch != {"type": "null"}]
        if len(kept) != len(branches):
            del schema["anyOf"]
            if len(kept) == 1:
                schema = {**kept[0], **schema}
            else:
                schema["anyOf"] = kept
    if schema.get("default", ...) is None:
        del schema["default"]
    return schema


def _query_parameters(model_schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = set(model_schema.get("required", ()))
    parameters = []
    for name, field_schema in model_schema.get("properties", {}).items():
        schema = _without_null(field_schema)
        schema.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
        description = schema.pop("description", None)
        if description:
            parameter["description"] = description
        parameter["schema"] = schema
        parameters.append(parameter)
    return parameters


def _path_parameter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": "A positive integer id; anything else is a 404.",
        "schema": {"type": "integer", "minimum": 1},
    }


def _declared_response(status: int, model: Any, schema: Any | None) -> dict[str, Any]:
    """A status the operation declares. One of the generic errors keeps its headers (such as
    Retry-After), and its text too when the body is still an error body."""
    generic = _ERRORS[status][1] if status in _ERRORS else None
    is_error_body = isinstance(model, type) and issubclass(model, ErrorBody)
    response: dict[str, Any] = {
        "description": generic["description"]
        if generic and is_error_body
        else http.HTTPStatus(status).phrase,
        "headers": dict(generic["headers"])
        if generic
        else {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}},
    }
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _reachable_schemas(roots: Any, schemas: Mapping[str, Any]) -> set[str]:
    prefix = "#/components/schemas/"
    seen: set[str] = set()
    pending = [roots]
    while pending:
        for ref in _references(pending.pop()):
            name = ref.removeprefix(prefix)
            if ref.startswith(prefix) and name not in seen and name in schemas:
                seen.add(name)
                pending.append(schemas[name])
    return seen


def build_document(
    operations: Sequence[Operation], *, title: str = "ticket-system", version: str | None = None
) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing `operations` (a fresh dict on every call).

    Raises ValueError when two operations share a method and a path.
    """
    operations = [operation for operation in operations if operation.tag != DOCS_TAG]
    schemas, components = _schemas(operations)
    ids = _operation_ids(operations)
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    used_errors: set[int] = set()
    for index, (operation, operation_id) in enumerate(zip(operations, ids, strict=True)):
        if operation.tag not in tags:
            tags.append(operation.tag)
        entry: dict[str, Any] = {
            "operationId": operation_id,
            "summary": operation.summary,
            "tags": [operation.tag],
        }
        if operation.description:
            entry["description"] = operation.description
        parameters = [_path_parameter(name) for name in path_parameters(operation.path)]
        if operation.query is not None:
            query_schema = _resolve(schemas[(index, "query")], components)
            parameters.extend(_query_parameters(query_schema))
        if parameters:
            entry["parameters"] = parameters
        if operation.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas[(index, "body")]}},
            }
        responses: dict[str, Any] = {}
        for status, model in sorted(operation.responses.items()):
            schema = schemas[(index, f"response {status}")] if model is not None else None
            responses[str(status)] = _declared_response(status, model, schema)
        for status in error_statuses(operation):
            if str(status) not in responses:
                used_errors.add(status)
                responses[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
        entry["responses"] = dict(sorted(responses.items()))
        entry["security"] = [{TOKEN_SCHEME: []}] if operation.auth else []
        paths.setdefault(_openapi_path(operation.path), {})[operation.method.lower()] = entry

    error_responses = {
        name: response for status, (name, response) in _ERRORS.items() if status in used_errors
    }
    reachable = _reachable_schemas([paths, error_responses], components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version or _package_version(),
            "description": _DESCRIPTION,
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {
            "schemas": {name: components[name] for name in sorted(reachable)},
            "responses": error_responses,
            "headers": copy.deepcopy(_HEADERS),
            "securitySchemes": copy.deepcopy(_SECURITY_SCHEMES),
        },
    }


def _package_version() -> str:
    try:
        return metadata.version("ticket-system")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


# --- The OpenAPI 3.0 rendition, for Swagger UI 4 ------------------------------------------


def downgrade_to_30(document: Mapping[str, Any]) -> dict[str, Any]:
    """The same document as OpenAPI 3.0.3, for tools that cannot read 3.1 (Swagger UI 4).

    Rewrites what JSON Schema 2020-12 says differently from OpenAPI 3.0's schema dialect:
    `{"type": "null"}` branches and type lists become `nullable`, `const` an `enum`,
    `examples` an `example`, numeric `exclusiveMinimum`/`Maximum` the boolean forms, and a
    `$ref` with siblings an `allOf`. Only schema objects are rewritten.
    """
    result = copy.deepcopy(dict(document))
    result["openapi"] = "3.0.3"
    components = result.get("components", {})
    components["schemas"] = {
        name: _schema_30(schema) for name, schema in components.get("schemas", {}).items()
    }
    for name, header in components.get("headers", {}).items():
        components["headers"][name] = _with_schema_30(header)
    for response in components.get("responses", {}).values():
        _responses_30(response)
    for item in result.get("paths", {}).values():
        for operation in item.values():
            operation["parameters"] = [
                _with_schema_30(parameter) for parameter in operation.get("parameters", [])
            ]
            if not operation["parameters"]:
                del operation["parameters"]
            for media in operation.get("requestBody", {}).get("content", {}).values():
                media["schema"] = _schema_30(media["schema"])
            for response in operation["responses"].values():
                _responses_30(response)
    return result


def _with_schema_30(holder: Mapping[str, Any]) -> dict[str, Any]:
    holder = dict(holder)
    if "schema" in holder:
        holder["schema"] = _schema_30(holder["schema"])
    return holder


def _responses_30(response: dict[str, Any]) -> None:
    for media in response.get("content", {}).values():
        media["schema"] = _schema_30(media["schema"])
    for name, header in response.get("headers", {}).items():
        response["headers"][name] = _with_schema_30(header)


_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
# 2020-12 keywords OpenAPI 3.0 does not know; dropping them only loosens the schema.
_DROPPED = ("$schema", "$id", "$defs", "prefixItems", "contentMediaType", "contentEncoding")


def _schema_30(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_LISTS:
            out[key] = [_schema_30(item) for item in value]
        elif key in _SCHEMA_MAPS:
            out[key] = {name: _schema_30(item) for name, item in value.items()}
        elif key in _SCHEMA_VALUES:
            out[key] = _schema_30(value)
        else:
            out[key] = value
    for key in _DROPPED:
        out.pop(key, None)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out:
        examples = out.pop("examples")
        if isinstance(examples, list) and examples:
            out["example"] = examples[0]
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[flag] = out[bound]
            out[bound] = True
    kind = out.get("type")
    if isinstance(kind, list):
        kinds = [item for item in kind if item != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            out["type"] = kinds[0]
        else:
            del out["type"]
            out["anyOf"] = [{"type": item} for item in kinds]
    elif kind == "null":
        del out["type"]
        out["nullable"] = True
        out["enum"] = [None]
    for keyword in ("anyOf", "oneOf"):
        branches = out.get(keyword)
        if isinstance(branches, list) and {"enum": [None], "nullable": True} in branches:
            branches = [item for item in branches if item != {"enum": [None], "nullable": True}]
            out["nullable"] = True
            del out[keyword]
            if len(branches) == 1 and "$ref" not in branches[0] and not set(branches[0]) & set(out):
                out.update(branches[0])
            elif len(branches) == 1:
                out["allOf"] = [*branches, *out.get("allOf", [])]
            else:
                out[keyword] = branches
    if out.get("nullable") and isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]  # 3.0.3: an enum must list null to allow it
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}, *out.get("allOf", [])]
    return out


# --- The served bytes, built once per process ----------------------------------------------


@functools.cache
def document_bytes(version: Literal["3.1", "3.0"] = "3.1") -> bytes:
    """The document for `web.routes.OPERATIONS`, serialised; built on first use, then cached."""
    # Imported here, not at the top: web.routes imports the docs handlers, which import this.
    from web.routes import OPERATIONS

    document = build_document(OPERATIONS)
    if version == "3.0":
        document = downgrade_to_30(document)
    return json.dumps(document, ensure_ascii=False, indent=1).encode()
