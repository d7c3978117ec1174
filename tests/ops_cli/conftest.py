"""The operations commands end to end: the installed `tickets` script in a subprocess (run in a
worker thread, so that an in-process leader on the test's event loop keeps answering), against
this test's database; servers, when a test needs them, are in-process apps on that database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Tickets, explain

# Far above what any step takes; reached only when something is broken.
DEADLINE_S = 15


@pytest.fixture
def tickets(database_url: str, tmp_path: Path) -> Tickets:
    return Tickets(database_url=database_url, cwd=tmp_path)


async def run_json(tickets: Tickets, *args: str) -> Any:
    """Run `tickets *args --json`; exit 0 expected; the parsed stdout."""
    result = await tickets.run(*args, "--json")
    assert result.returncode == 0, explain(result)
    return json.loads(result.stdout)
