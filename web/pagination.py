"""DRF-style limit/offset pages: `{"count", "next", "previous", "results"}`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.schemas import PageQuery


def page(request: web.Request, query: PageQuery, count: int, results: list[Any]) -> dict[str, Any]:
    def link(offset: int) -> str:
        return str(request.url.update_query(limit=query.limit, offset=offset))

    following = query.offset + query.limit
    return {
        "count": count,
        "next": link(following) if following < count else None,
        "previous": link(max(0, query.offset - query.limit)) if query.offset > 0 else None,
        "results": results,
    }
