"""The app served in the test's own process, in the mode production serves it.

aiohttp's TestServer cancels a request's handler when its client hangs up; `web.run_app`,
which serves production, does not (its `handler_cancellation` defaults to off), so there the
handler runs on and its next read of the connection fails instead. Tests serve the app the
way production does unless they say otherwise.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner


class AppServer(TestServer):
    def __init__(self, app: web.Application, *, handler_cancellation: bool = False) -> None:
        super().__init__(app)
        self.handler_cancellation = handler_cancellation

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs["handler_cancellation"] = self.handler_cancellation
        return await super()._make_runner(**kwargs)
