"""Running `tickets` in tests: in-process through click's CliRunner (fast, and it can drive
prompts), or as the installed console script in a subprocess (the real entry point).

Both run off the event loop (a worker thread), because the commands call asyncio.run; the
tests themselves stay async so the `db` and `make` fixtures work as everywhere else.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import main

# The console script installed next to the interpreter running the tests (.venv/bin/).
TICKETS = Path(sys.executable).parent / "tickets"
# Environment the commands read and the tests control; everything else is inherited.
_CONTROLLED = ("DATABASE_URL", "TICKETS_SUPERUSER_PASSWORD")


def base_env(**values: str) -> dict[str, str]:
    """This process's environment without the variables tests control, plus `values`."""
    env = {key: value for key, value in os.environ.items() if key not in _CONTROLLED}
    env.update(values)
    return env


@dataclass
class Tickets:
    """`tickets` against one database; `env` adds to (or, with None, removes from) it."""

    database_url: str
    cwd: Path
    calls: list[list[str]] = field(default_factory=list)

    async def invoke(
        self, *args: str, input: str | bytes | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        """In-process, through CliRunner; stdout and stderr are kept apart."""
        values: dict[str, str | None] = {name: None for name in _CONTROLLED}
        values["DATABASE_URL"] = self.database_url
        values.update(env or {})
        self.calls.append(list(args))
        return await asyncio.to_thread(
            CliRunner().invoke, main, list(args), input=input, env=values, prog_name="tickets"
        )

    async def run(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The installed console script in a subprocess."""
        self.calls.append(list(args))
        return await asyncio.to_thread(
            subprocess.run,
            [str(TICKETS), *args],
            input=input.decode() if input is not None else None,
            env=base_env(**{"DATABASE_URL": self.database_url, **(env or {})}),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def tickets(database_url: str, tmp_path: Path) -> Tickets:
    return Tickets(database_url=database_url, cwd=tmp_path)


def explain(result: Result | subprocess.CompletedProcess[str]) -> str:
    """What to print when an exit code is not the expected one."""
    if isinstance(result, Result):
        return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
