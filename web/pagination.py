"""DRF-style pages: `{"count", "next", "previous", "results"}`, by offset or after an id.

`count` is always the whole list's. With `after`, `next` continues after the page's last id
and there is no `previous`: a walk by id goes forward, and skips and repeats nothing however
the list changes meanwhile.

Links are relative references (path and query): built from the request's Host and scheme,
they would name whatever host a client claimed, and `http` behind a proxy that terminates
TLS.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.schemas import PageQuery


def page(request: web.Request, query: PageQuery, count: int, results: list[Any]) -> dict[str, Any]:
    if query.after is not None:
        full = len(results) == query.limit
        onwards = (
            request.rel_url.update_query(limit=query.limit, after=results[-1].id) if full else None
        )
        return {
            "count": count,
            "next": str(onwards.without_query_params("offset")) if onwards else None,
            "previous": None,
            "results": results,
        }

    def link(offset: int) -> str:
        return str(request.rel_url.update_query(limit=query.limit, offset=offset))

    following = query.offset + query.limit
    return {
        "count": count,
        "next": link(following) if following < count else None,
        "previous": link(max(0, query.offset - query.limit)) if query.offset > 0 else None,
        "results": results,
    }
