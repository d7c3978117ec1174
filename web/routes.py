"""The whole route table, gathered from the handler modules."""

from __future__ import annotations

from web.handlers import auth
from web.routing import Operation

OPERATIONS: list[Operation] = [*auth.OPERATIONS]
