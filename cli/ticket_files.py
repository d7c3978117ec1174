"""Reading tickets out of a CSV or JSON Lines file, one row at a time, checking each row.

No database and no terminal here: a `TicketReader` turns a binary stream into the
``(title, description)`` tuples of the good rows, in file order, and keeps the line number
and reason of each bad one. The caller streams the tuples straight into COPY, so the file
is never held in memory whole.

A row is good when the database would take it: the checks below mirror the tickets table's
CHECK constraints (storage/migrations/0001_initial.sql; keep the limits in sync) plus what
the wire cannot carry (NUL bytes, text that is not UTF-8). Checking here, rather than
letting COPY fail, is what lets us name every bad line instead of only the first.

Line numbers are the file's physical lines, counted from 1 (the CSV header is line 1); a
CSV row spanning several lines (a quoted newline) is reported at its first line.

The loops are the import's hot path (a million rows must take seconds, not minutes), so
they stay flat: C parsers (csv, json) do the splitting, and the per-row Python is a handful
of length checks.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, BinaryIO, Final

# Keep in sync with the CHECKs on tickets.title and tickets.description.
MAX_TITLE_CHARS: Final = 200
MAX_DESCRIPTION_CHARS: Final = 10_000

FORMATS: Final = ("csv", "jsonl")
COLUMNS: Final = ("title", "description")

# How often (in rows) the progress callback runs: rarely enough to cost nothing.
_PROGRESS_EVERY_ROWS: Final = 20_000
_BOM: Final = "\ufeff"

Record = tuple[str, str]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


class UnreadableFile(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns, …)."""


def problem(title: str, description: str) -> str | None:
    """Why the database would refuse this row, or None when it would take it."""
    length = len(title)
    if length == 0:
        return "title is empty"
    if length > MAX_TITLE_CHARS:
        return f"title is {length:,} characters long (at most {MAX_TITLE_CHARS})"
    length = len(description)
    if length > MAX_DESCRIPTION_CHARS:
        return f"description is {length:,} characters long (at most {MAX_DESCRIPTION_CHARS:,})"
    if "\x00" in title or "\x00" in description:
        return "contains a NUL character"
    if not (title.isascii() and description.isascii()):
        # CSV is decoded with surrogateescape, so invalid bytes arrive as lone surrogates;
        # JSON can spell them too ("\ud800"). Neither can be encoded, nor stored.
        try:
            title.encode()
            description.encode()
        except UnicodeEncodeError:
            return "not valid UTF-8"
    return None


class TicketReader:
    """Reads one file; iterate `rows()` once, then read the counters.

    `rows()` yields the good rows as ``(title, description)`` in file order. With
    ``all_or_nothing`` it stops yielding at the first bad row (the import will be rolled
    back, so sending more is wasted work) but still reads to the end, to find and count
    every bad row. Raises UnreadableFile when the file as a whole cannot be read (a CSV
    without a usable header row).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        file_format: str,
        keep_bad: int = 20,
        progress: Progress | None = None,
    ) -> None:
        if file_format not in FORMATS:
            raise ValueError(f"unknown format {file_format!r}")
        self._stream = stream
        self._format = file_format
        self._keep_bad = keep_bad
        self._progress = progress
        self.bytes_read = 0
        self.good_count = 0
        self.bad_count = 0
        # The first `keep_bad` bad rows, in file order.
        self.bad: list[BadRow] = []

    def rows(self, *, all_or_nothing: bool = False) -> Iterator[Record]:
        """The good rows, read lazily; a CSV's header is read now, so UnreadableFile is
        raised here and never from inside the iteration (that is, never mid-COPY)."""
        rows = self._csv() if self._format == "csv" else self._jsonl()
        return self._counted(rows, all_or_nothing=all_or_nothing)

    def _counted(self, rows: Iterator[Record], *, all_or_nothing: bool) -> Iterator[Record]:
        progress = self._progress
        for record in rows:
            self.good_count += 1
            if progress is not None and self.good_count % _PROGRESS_EVERY_ROWS == 0:
                progress(self.bytes_read, self.good_count + self.bad_count)
            if not (all_or_nothing and self.bad_count):
                yield record
        if progress is not None:
            progress(self.bytes_read, self.good_count + self.bad_count)

    def _reject(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < self._keep_bad:
            self.bad.append(BadRow(line, reason))

    def _lines(self) -> Iterator[str]:
        """The file's lines as text; bytes that are not UTF-8 become lone surrogates."""
        first = True
        for raw in self._stream:
            self.bytes_read += len(raw)
            text = raw.decode("utf-8", "surrogateescape")
            if first:
                first = False
                text = text.removeprefix(_BOM)
            yield text

    def _csv(self) -> Iterator[Record]:
        # strict: a stray quote is an error, not a field silently swallowing the lines after it.
        reader = csv.reader(self._lines(), strict=True)
        pick, width = self._header(reader)
        return self._csv_rows(reader, pick, width)

    def _csv_rows(
        self, reader: Any, pick: Callable[[list[str]], Record], width: int
    ) -> Iterator[Record]:
        reject = self._reject
        last_line = reader.line_num
        while True:
            try:
                for row in reader:
                    line = last_line + 1
                    last_line = reader.line_num
                    if len(row) != width:
                        if row:  # a blank line is skipped, as csv.DictReader does
                            reject(line, f"expected {width} field(s), found {len(row)}")
                        continue
                    record = pick(row)
                    reason = problem(*record)
                    if reason is None:
                        yield record
                    else:
                        reject(line, reason)
                return
            except csv.Error as exc:
                # The reader resumes at the next line; what follows may be misaligned, and
                # is then reported too.
                reject(last_line + 1, f"malformed CSV: {exc}")
                last_line = reader.line_num

    def _header(self, reader: Iterator[list[str]]) -> tuple[Callable[[list[str]], Record], int]:
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise UnreadableFile(f"malformed CSV header: {exc}") from exc
        if not header:
            raise UnreadableFile("no header row (expected: title,description)")
        names = [name.strip().lower() for name in header]
        unknown = [name for name in names if name not in COLUMNS]
        if unknown:
            raise UnreadableFile(
                f"unknown column(s) in the header: {', '.join(map(repr, unknown))} "
                "(expected: title and optionally description)"
            )
        if len(set(names)) != len(names):
            raise UnreadableFile("a column appears twice in the header")
        if "title" not in names:
            raise UnreadableFile("the header has no 'title' column")
        title_at = names.index("title")
        if "description" not in names:
            return (lambda row: (row[title_at], "")), 1
        return itemgetter(title_at, names.index("description")), len(names)

    def _jsonl(self) -> Iterator[Record]:
        loads = json.loads
        reject = self._reject
        line = 0
        for raw in self._stream:
            line += 1
            self.bytes_read += len(raw)
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                reject(line, "not valid UTF-8")
                continue
            if line == 1:
                text = text.removeprefix(_BOM)
            try:
                item = loads(text)
            except ValueError as exc:
                if text.isspace() or not text:
                    continue  # blank lines are allowed, as most JSON Lines readers do
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                reject(line, f"malformed JSON: {reason}")
                continue
            except RecursionError:
                # The C decoder recurses once per nesting level: a line of 100,000 brackets
                # is a bad row like any other, not a crash of the whole import.
                reject(line, "malformed JSON: nested too deeply")
                continue
            if type(item) is not dict:
                reject(line, "expected a JSON object")
                continue
            if len(item) > 2 or not item.keys() <= _JSON_KEYS:
                unknown = sorted(item.keys() - _JSON_KEYS)
                reject(line, f"unknown field(s): {', '.join(unknown)}")
                continue
            title = item.get("title")
            description = item.get("description", "")
            if type(title) is not str or type(description) is not str:
                # As in the API: a field that is sent must have its type; null is not "empty".
                reject(line, _type_problem(item))
                continue
            refusal = problem(title, description)
            if refusal is None:
                yield (title, description)
            else:
                reject(line, refusal)


def _type_problem(item: dict[str, object]) -> str:
    if "title" not in item:
        return "title is missing"
    if type(item["title"]) is not str:
        return "title must be a string"
    return "description must be a string"


_JSON_KEYS: Final = frozenset(COLUMNS)
