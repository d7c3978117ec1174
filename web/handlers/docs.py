"""The API's own documentation: the OpenAPI document and a Swagger UI page to explore it.

Everything is served by this app: Swagger UI's assets come from the `swagger-ui-bundle`
package, never from a CDN, and the page turns off the UI's online validator, so a browser
opening the docs talks to no other host.

These routes (tag `docs`) are left out of the document they serve: it describes the API.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from web.errors import NotFound
from web.openapi import DOCS_TAG, document_bytes
from web.routing import Operation

SCHEMA_PATH = "/api/schema/"
DOCS_PATH = "/api/docs/"
# Swagger UI 4 renders OpenAPI 3.0 only; see web.openapi.downgrade_to_30.
UI_SCHEMA_PATH = "/api/docs/openapi-3.0.json"
STATIC_PATH = "/api/docs/static/"

_ASSET_DIR = Path(str(swagger_ui_path))
_PAGE_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")
# What the page loads, plus the source maps a browser's developer tools ask for.
_ASSETS = frozenset(
    name
    for asset in _PAGE_ASSETS
    for name in (asset, f"{asset}.map")
    if (_ASSET_DIR / name).is_file()
)
_OPENAPI_MEDIA_TYPE = "application/vnd.oai.openapi+json"


def _page(title: str) -> str:
    static = html.escape(STATIC_PATH.removeprefix(DOCS_PATH))
    schema = html.escape(UI_SCHEMA_PATH.removeprefix(DOCS_PATH))
    # Relative URLs, so the page keeps working behind a proxy that mounts the API elsewhere.
    # `validatorUrl: null`: Swagger UI's default validator is a service on another host.
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{static}swagger-ui.css">
<link rel="icon" type="image/png" href="{static}favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{static}favicon-16x16.png" sizes="16x16">
</head>
<body data-openapi-url="{schema}">
<div id="swagger-ui"></div>
<script src="{static}swagger-ui-bundle.js"></script>
<script>
window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: new URL(document.body.dataset.openapiUrl, window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout",
  }});
}});
</script>
</body>
</html>
"""


_PAGE = _page("ticket-system API").encode()


async def schema(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document; its own media type when the client asks for it by name."""
    wants_openapi = _OPENAPI_MEDIA_TYPE in request.headers.get("Accept", "")
    return web.Response(
        body=document_bytes("3.1"),
        content_type=_OPENAPI_MEDIA_TYPE if wants_openapi else "application/json",
        charset="utf-8",
    )


async def ui_schema(request: web.Request) -> web.Response:
    return web.Response(
        body=document_bytes("3.0"), content_type="application/json", charset="utf-8"
    )


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_PAGE, content_type="text/html", charset="utf-8")


async def asset(request: web.Request) -> web.FileResponse:
    """One of Swagger UI's files; only the ones listed, so no path can reach anything else."""
    name = request.match_info["name"]
    if name not in _ASSETS:
        raise NotFound()
    return web.FileResponse(_ASSET_DIR / name, headers={"Cache-Control": "public, max-age=3600"})


OPERATIONS = [
    Operation(
        "GET",
        SCHEMA_PATH,
        schema,
        summary="The OpenAPI 3.1 document of this API",
        tag=DOCS_TAG,
        auth=False,
    ),
    Operation("GET", DOCS_PATH, page, summary="Swagger UI", tag=DOCS_TAG, auth=False),
    Operation(
        "GET",
        UI_SCHEMA_PATH,
        ui_schema,
        summary="The OpenAPI document as 3.0, for Swagger UI 4",
        tag=DOCS_TAG,
        auth=False,
    ),
    Operation(
        "GET",
        STATIC_PATH + "{name:[A-Za-z0-9._-]+}",
        asset,
        summary="Swagger UI's scripts, styles and icons",
        tag=DOCS_TAG,
        auth=False,
    ),
]
