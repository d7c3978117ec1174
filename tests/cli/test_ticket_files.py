"""The import's row reader on its own: bytes in, good rows and bad lines out (no database)."""

from __future__ import annotations

import io
import json

import pytest

from cli.ticket_files import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, TicketReader, UnreadableFile


def read(data: bytes, file_format: str, *, all_or_nothing: bool = False, keep_bad: int = 20):
    reader = TicketReader(io.BytesIO(data), file_format=file_format, keep_bad=keep_bad)
    rows = list(reader.rows(all_or_nothing=all_or_nothing))
    bad = [(row.line, row.reason) for row in reader.bad]
    return rows, bad, reader


def jsonl(*items: object) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


LONG_TITLE = "t" * MAX_TITLE_CHARS
LONG_DESCRIPTION = "d" * MAX_DESCRIPTION_CHARS


@pytest.mark.parametrize(
    ("data", "rows"),
    [
        (b"title,description\na,b\n", [("a", "b")]),
        (b"description,title\nb,a\n", [("a", "b")]),
        (b"title\na\nb\n", [("a", ""), ("b", "")]),
        (b" Title , DESCRIPTION \r\na,b\r\n", [("a", "b")]),
        (b"\xef\xbb\xbftitle,description\na,b", [("a", "b")]),  # a BOM, no final newline
        (b'title,description\n"a, b","line 1\nline 2"\n', [("a, b", "line 1\nline 2")]),
        (b'title,description\n"say ""hi""",\n', [('say "hi"', "")]),
        (b"title,description\n\n\na,b\n\n", [("a", "b")]),  # blank lines are skipped
        ("title,description\nprinter café ☕,ü\n".encode(), [("printer café ☕", "ü")]),
        (
            f"title,description\n{LONG_TITLE},{LONG_DESCRIPTION}\n".encode(),
            [(LONG_TITLE, LONG_DESCRIPTION)],
        ),
        (b"title,description\n", []),
    ],
)
def test_good_csv(data: bytes, rows: list[tuple[str, str]]) -> None:
    assert read(data, "csv")[:2] == (rows, [])


@pytest.mark.parametrize(
    ("data", "bad"),
    [
        (b"title,description\n,x\n", (2, "title is empty")),
        (
            f"title,description\n{LONG_TITLE}x,\n".encode(),
            (2, "title is 201 characters long (at most 200)"),
        ),
        (
            f"title,description\na,{LONG_DESCRIPTION}x\n".encode(),
            (2, "description is 10,001 characters long (at most 10,000)"),
        ),
        (b"title,description\na\x00b,x\n", (2, "contains a NUL character")),
        (b"title,description\na,\xff\xfe\n", (2, "not valid UTF-8")),
        (b"title,description\n\xc3(,x\n", (2, "not valid UTF-8")),
        (b"title,description\na,b,c\n", (2, "expected 2 field(s), found 3")),
        (b"title,description\na\n", (2, "expected 2 field(s), found 1")),
        (b'title,description\n"a"b,c\n', (2, "malformed CSV: ',' expected after '\"'")),
        (
            b'title,description\nok,fine\n"never closed,x\n',
            (3, "malformed CSV: unexpected end of data"),
        ),
    ],
)
def test_bad_csv(data: bytes, bad: tuple[int, str]) -> None:
    _, found, _ = read(data, "csv")
    assert found == [bad]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no header row"),
        (b"\n", "no header row"),
        (b"name,title\n", "unknown column(s) in the header: 'name'"),
        (b"description\n", "no 'title' column"),
        (b"title,title\n", "a column appears twice"),
        (b'"title\n', "malformed CSV header"),
    ],
)
def test_a_csv_without_a_usable_header_is_unreadable(data: bytes, message: str) -> None:
    reader = TicketReader(io.BytesIO(data), file_format="csv")
    with pytest.raises(UnreadableFile) as raised:
        reader.rows()
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("data", "rows"),
    [
        (jsonl({"title": "a", "description": "b"}), [("a", "b")]),
        (jsonl({"title": "a"}), [("a", "")]),
        (jsonl({"title": "line\nbreak", "description": "ü ☕"}), [("line\nbreak", "ü ☕")]),
        (b'\xef\xbb\xbf{"title": "a"}\n\n   \n{"title": "b"}', [("a", ""), ("b", "")]),
        (
            jsonl({"title": LONG_TITLE, "description": LONG_DESCRIPTION}),
            [(LONG_TITLE, LONG_DESCRIPTION)],
        ),
        (b"", []),
    ],
)
def test_good_jsonl(data: bytes, rows: list[tuple[str, str]]) -> None:
    assert read(data, "jsonl")[:2] == (rows, [])


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"title": ""}', "title is empty"),
        (b'{"title": "' + b"t" * 201 + b'"}', "title is 201 characters long (at most 200)"),
        (b'{"title": "a", "description": "' + b"d" * 10_001 + b'"}', "description is 10,001"),
        (b'{"title": "a\\u0000"}', "contains a NUL character"),
        (b'{"title": "\\ud800"}', "not valid UTF-8"),
        (b'{"title": "\xff"}', "not valid UTF-8"),
        (b'{"title": "a"', "malformed JSON"),
        (b"title,description", "malformed JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON: nested too deeply"),
        (b'{"title": ' * 100_000 + b'"a"' + b"}" * 100_000, "malformed JSON: nested too deeply"),
        (b'["a", "b"]', "expected a JSON object"),
        (b'{"description": "b"}', "title is missing"),
        (b'{"title": null}', "title must be a string"),
        (b'{"title": 5}', "title must be a string"),
        (b'{"title": "a", "description": null}', "description must be a string"),
        (b'{"title": "a", "status": "sold"}', "unknown field(s): status"),
    ],
)
def test_bad_jsonl(line: bytes, reason: str) -> None:
    rows, bad, _ = read(jsonl({"title": "ok"}) + line + b"\n" + jsonl({"title": "ok too"}), "jsonl")
    assert rows == [("ok", ""), ("ok too", "")]
    assert len(bad) == 1
    assert bad[0][0] == 2
    assert bad[0][1].startswith(reason)


def test_a_multi_line_csv_row_is_reported_at_its_first_line() -> None:
    data = b'title,description\n"a","one\ntwo\nthree"\n,empty\nok,\n'
    rows, bad, _ = read(data, "csv")
    assert rows == [("a", "one\ntwo\nthree"), ("ok", "")]
    assert bad == [(5, "title is empty")]


def test_reading_resumes_after_a_malformed_csv_line() -> None:
    rows, bad, _ = read(b'title,description\n"a"b,c\nok,fine\n', "csv")
    assert rows == [("ok", "fine")]
    assert [line for line, _ in bad] == [2]


def test_all_or_nothing_stops_yielding_at_the_first_bad_row_but_counts_every_one() -> None:
    data = b"title,description\na,\n,\nb,\n,\nc,\n"
    rows, bad, reader = read(data, "csv", all_or_nothing=True)
    assert rows == [("a", "")]
    assert [line for line, _ in bad] == [3, 5]
    assert (reader.good_count, reader.bad_count) == (3, 2)


def test_only_the_first_bad_rows_are_kept_but_all_are_counted() -> None:
    data = b"title\n" + b'""\n' * 50
    _, bad, reader = read(data, "csv", keep_bad=20)
    assert [line for line, _ in bad] == list(range(2, 22))
    assert reader.bad_count == 50


def test_progress_reports_bytes_and_rows() -> None:
    data = b"title\n" + b"x\n" * 50_000
    calls: list[tuple[int, int]] = []
    reader = TicketReader(io.BytesIO(data), file_format="csv", progress=lambda *c: calls.append(c))
    assert sum(1 for _ in reader.rows()) == 50_000
    assert calls[-1] == (len(data), 50_000)
    assert calls == sorted(calls)
    assert len(calls) >= 3
