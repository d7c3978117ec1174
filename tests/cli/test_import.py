"""`tickets import-tickets`, end to end: files in, rows (or nothing) in the tickets table."""

from __future__ import annotations

import asyncio
import csv
import json
import re
from pathlib import Path

import pytest

from tests.cli.conftest import Tickets, explain


async def stored(db) -> list[tuple[str, str]]:
    """Every ticket as (title, description), in id order."""
    rows = await db.fetch("SELECT title, description FROM tickets ORDER BY id")
    return [(row["title"], row["description"]) for row in rows]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["title", "description"])
        writer.writerows(rows)
    return path


def jsonl(*items: object) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


SAMPLE = [
    ("Printer jammed", "Floor 3, again"),
    ("VPN: can't connect", 'Says "timeout"\nthen quits'),
    ("Café ☕ machine", ""),
    ("t" * 200, "d" * 10_000),  # the longest the database takes
]


async def test_csv_import_keeps_file_order_and_shows_progress(
    tickets: Tickets, db, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "tickets.csv", SAMPLE)
    result = await tickets.run("import-tickets", str(path))
    assert result.returncode == 0, explain(result)
    assert await stored(db) == SAMPLE
    assert re.search(r"Imported 4 ticket\(s\) in [\d.]+ s \([\d,]+ rows/s\)\.", result.stdout)
    # The progress bar (bytes of the file's size) ends on stderr, full.
    assert "importing" in result.stderr
    assert "100%" in result.stderr
    assert "4 rows" in result.stderr


async def test_jsonl_import(tickets: Tickets, db, tmp_path: Path) -> None:
    path = tmp_path / "tickets.jsonl"
    path.write_bytes(
        jsonl(*({"title": title, "description": text} for title, text in SAMPLE[:2]))
        + jsonl({"title": "no description"})
    )
    result = await tickets.invoke("import-tickets", str(path))
    assert result.exit_code == 0, explain(result)
    assert await stored(db) == [*SAMPLE[:2], ("no description", "")]
    assert "Imported 3 ticket(s)" in result.stdout
    assert "importing" in result.stderr


async def test_a_csv_may_have_only_a_title_column(tickets: Tickets, db, tmp_path: Path) -> None:
    path = tmp_path / "titles.csv"
    path.write_text("title\nfirst\nsecond\n")
    result = await tickets.invoke("import-tickets", str(path))
    assert result.exit_code == 0, explain(result)
    assert await stored(db) == [("first", ""), ("second", "")]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
async def test_dash_reads_stdin(tickets: Tickets, db, file_format: str) -> None:
    data = b"title\nfrom stdin\n" if file_format == "csv" else jsonl({"title": "from stdin"})
    result = await tickets.invoke("import-tickets", "--format", file_format, "-", input=data)
    assert result.exit_code == 0, explain(result)
    assert await stored(db) == [("from stdin", "")]
    # The size of a pipe is unknown: the bar counts rows.
    assert "1 rows" in result.stderr


async def test_stdin_needs_a_format(tickets: Tickets, db) -> None:
    result = await tickets.invoke("import-tickets", "-", input=b"title\nx\n")
    assert result.exit_code == 1, explain(result)
    assert "--format is required" in result.stderr


async def test_the_format_comes_from_the_extension_or_the_option(
    tickets: Tickets, db, tmp_path: Path
) -> None:
    path = tmp_path / "tickets.txt"
    path.write_bytes(jsonl({"title": "a"}))
    refused = await tickets.invoke("import-tickets", str(path))
    assert refused.exit_code == 1, explain(refused)
    assert "pass --format" in refused.stderr
    accepted = await tickets.invoke("import-tickets", "--format", "jsonl", str(path))
    assert accepted.exit_code == 0, explain(accepted)
    assert await stored(db) == [("a", "")]


BAD_CSV = b"".join(
    [
        b"title,description\n",  # line 1
        b"good one,fine\n",  # 2
        b",empty title\n",  # 3
        b'"multi","line\n',  # 4
        b'description"\n',  # 5
        b"three,fields,here\n",  # 6
        b"x" * 201 + b",too long\n",  # 7
        b"nul\x00inside,x\n",  # 8
        b"\xff\xfe,not utf-8\n",  # 9
        b'"stray"quote,x\n',  # 10
        b"last good,\n",  # 11
    ]
)
BAD_CSV_LINES = [
    "line 3: title is empty",
    "line 6: expected 2 field(s), found 3",
    "line 7: title is 201 characters long (at most 200)",
    "line 8: contains a NUL character",
    "line 9: not valid UTF-8",
    "line 10: malformed CSV: ',' expected after '\"'",
]
BAD_CSV_GOOD_ROWS = [("good one", "fine"), ("multi", "line\ndescription"), ("last good", "")]

BAD_JSONL = (
    jsonl({"title": "good one"})  # line 1
    + b"{not json\n"  # 2
    + jsonl({"title": ""})  # 3
    + jsonl({"title": "x", "description": "d" * 10_001})  # 4
    + jsonl({"title": "x", "agent": 3})  # 5
    + jsonl({"title": "last good"})  # 6
)
BAD_JSONL_LINES = [
    "line 2: malformed JSON",
    "line 3: title is empty",
    "line 4: description is 10,001 characters long (at most 10,000)",
    "line 5: unknown field(s): agent",
]
BAD_JSONL_GOOD_ROWS = [("good one", ""), ("last good", "")]

BAD_FILES = {
    "csv": (BAD_CSV, BAD_CSV_LINES, BAD_CSV_GOOD_ROWS),
    "jsonl": (BAD_JSONL, BAD_JSONL_LINES, BAD_JSONL_GOOD_ROWS),
}


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
async def test_bad_rows_are_listed_by_line_and_nothing_is_imported(
    tickets: Tickets, db, tmp_path: Path, file_format: str
) -> None:
    data, lines, good = BAD_FILES[file_format]
    path = tmp_path / f"bad.{file_format}"
    path.write_bytes(data)
    result = await tickets.run("import-tickets", str(path))
    assert result.returncode == 1, explain(result)
    listed = [line.strip() for line in result.stderr.splitlines() if line.startswith("  line ")]
    assert [entry.split(": ", 1)[0] for entry in listed] == [e.split(": ", 1)[0] for e in lines]
    for entry, expected in zip(listed, lines, strict=True):
        assert entry.startswith(expected)
    assert f"{len(lines)} bad row(s): nothing was imported" in result.stderr
    assert f"import the {len(good)} good row(s)" in result.stderr
    assert result.stdout == ""
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
async def test_allow_partial_imports_the_good_rows_and_lists_the_bad(
    tickets: Tickets, db, tmp_path: Path, file_format: str
) -> None:
    data, lines, good = BAD_FILES[file_format]
    path = tmp_path / f"bad.{file_format}"
    path.write_bytes(data)
    result = await tickets.invoke("import-tickets", "--allow-partial", str(path))
    assert result.exit_code == 0, explain(result)
    assert await stored(db) == good
    assert f"Imported {len(good)} ticket(s)" in result.stdout
    assert f"skipped {len(lines)} bad row(s)" in result.stdout
    for expected in lines:
        assert f"  {expected}" in result.stderr


async def test_only_the_first_20_bad_rows_are_listed(tickets: Tickets, db, tmp_path: Path) -> None:
    path = tmp_path / "many-bad.csv"
    path.write_text("title\n" + "ok\n" + '""\n' * 50)
    result = await tickets.invoke("import-tickets", str(path))
    assert result.exit_code == 1, explain(result)
    listed = [line for line in result.stderr.splitlines() if line.startswith("  line ")]
    assert listed == [f"  line {n}: title is empty" for n in range(3, 23)]
    assert "… and 30 more" in result.stderr
    assert "50 bad row(s)" in result.stderr
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no header row"),
        ("subject,body\nx,y\n", "unknown column(s) in the header: 'subject', 'body'"),
        ("description\nx\n", "no 'title' column"),
    ],
)
async def test_a_csv_without_a_usable_header_is_refused(
    tickets: Tickets, db, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "headless.csv"
    path.write_text(content)
    result = await tickets.invoke("import-tickets", str(path))
    assert result.exit_code == 1, explain(result)
    assert message in result.stderr
    assert "importing" not in result.stderr  # refused before any progress
    assert await db.fetchval("SELECT count(*) FROM tickets") == 0


async def test_a_missing_file_is_a_usage_error(tickets: Tickets, tmp_path: Path) -> None:
    result = await tickets.invoke("import-tickets", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1, explain(result)
    assert "does not exist" in result.stderr


async def test_20000_rows_in_one_copy_in_file_order_with_one_notification(
    tickets: Tickets, db, tmp_path: Path
) -> None:
    rows = [(f"ticket {n:05d}", f'about {n}, "quoted"\nand more' * (n % 4)) for n in range(20_000)]
    path = write_csv(tmp_path / "20k.csv", rows)
    heard: list[str] = []
    done = asyncio.Event()

    def listen(_connection: object, _pid: int, _channel: str, payload: str) -> None:
        heard.append(payload)
        if payload == "end":
            done.set()

    await db.add_listener("tickets_inserted", listen)
    result = await tickets.run("import-tickets", str(path))
    assert result.returncode == 0, explain(result)
    assert "Imported 20,000 ticket(s)" in result.stdout
    assert "20,000 rows" in result.stderr

    assert await stored(db) == rows
    ids = [row["id"] for row in await db.fetch("SELECT id FROM tickets ORDER BY id")]
    assert ids == list(range(ids[0], ids[0] + 20_000))
    # Notifications arrive in commit order: once our own marker is heard, the import's is in.
    await db.execute("NOTIFY tickets_inserted, 'end'")
    await asyncio.wait_for(done.wait(), timeout=10)
    assert heard == [f"{ids[0]},{ids[-1]}", "end"]


async def test_a_line_nested_too_deeply_is_one_bad_row(
    tickets: Tickets, db, tmp_path: Path
) -> None:
    """json.loads recurses per level: the line must be refused like any malformed one."""
    path = tmp_path / "deep.jsonl"
    path.write_bytes(
        jsonl({"title": "before"})
        + b"[" * 100_000
        + b"]" * 100_000
        + b"\n"
        + jsonl({"title": "after"})
    )
    refused = await tickets.run("import-tickets", str(path))
    assert refused.returncode == 1, explain(refused)
    assert "line 2: malformed JSON" in refused.stderr
    assert "Traceback" not in refused.stderr
    partial = await tickets.run("import-tickets", "--allow-partial", str(path))
    assert partial.returncode == 0, explain(partial)
    assert await stored(db) == [("before", ""), ("after", "")]
