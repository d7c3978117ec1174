"""Named SQL queries, parsed once at import from the files in storage/sql/.

Each file is a sequence of blocks, each opened by ``-- name --`` and a one-line description
comment; code refers to a query by its name. Names are unique across all the files.
"""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        sql = "\n".join(line for line in body.splitlines() if not line.startswith("--")).strip()
        if not sql:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = sql
    return queries


def load(folder: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(folder.glob("*.sql")):
        for name, sql in parse(path.read_text()).items():
            if name in queries:
                raise ValueError(f"query {name!r} in {path.name} is defined twice")
            queries[name] = sql
    return queries


QUERIES: dict[str, str] = load(Path(__file__).parent / "sql")
