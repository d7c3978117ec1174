"""`tickets import-tickets FILE`: bulk-load tickets from CSV or JSON Lines.

The file is read once, as a stream (stdin works), checked row by row (cli.ticket_files)
and fed straight into one COPY inside one transaction (storage.imports): a file is
imported whole or, by default, not at all. With --allow-partial the good rows are kept
and the bad ones reported. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cli.support import Invalid, database_url, load_settings, run
from cli.ticket_files import FORMATS, BadRow, TicketReader, UnreadableFile
from cli.ticket_files import Progress as ProgressCallback
from config.settings import Settings

# How many bad rows are listed; the rest are only counted.
SHOWN_BAD_ROWS = 20
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Large reads keep the syscalls per row negligible.
_READ_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True)
class Outcome:
    imported: int
    good: int
    bad_count: int
    bad: list[BadRow]
    elapsed_s: float
    committed: bool


class _Rejected(Exception):
    """Raised inside the import to roll it back: the file has bad rows."""


@click.command("import-tickets")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "file_format",
    type=click.Choice(FORMATS),
    help="csv (a header row: title,description) or jsonl (one JSON object a line). "
    "Default: from the file's extension; required for stdin.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="Import the good rows even when some are bad (default: import nothing then).",
)
def import_tickets(file: str, file_format: str | None, allow_partial: bool) -> None:
    """Import tickets from FILE ("-" for stdin), in file order, in one transaction.

    Every row is checked (title 1..200 characters, description at most 10,000,
    UTF-8, no NUL); bad rows are listed with their line numbers. Exits with 1 when any row
    is bad (nothing is imported) unless --allow-partial is given.
    """
    file_format = file_format or _format_from_name(file)
    settings = load_settings()
    outcome = run(_import(settings, file, file_format, allow_partial=allow_partial))
    _report_bad(outcome)
    if not outcome.committed:
        raise Invalid(
            f"{outcome.bad_count:,} bad row(s): nothing was imported. Fix them, or pass "
            f"--allow-partial to import the {outcome.good:,} good row(s)."
        )
    rate = outcome.imported / outcome.elapsed_s if outcome.elapsed_s > 0 else 0.0
    click.echo(
        f"Imported {outcome.imported:,} ticket(s) in {outcome.elapsed_s:.1f} s "
        f"({rate:,.0f} rows/s)"
        + (f"; skipped {outcome.bad_count:,} bad row(s)." if outcome.bad_count else ".")
    )


def _format_from_name(file: str) -> str:
    if file == "-":
        raise Invalid("--format is required when reading from stdin.")
    suffix = Path(file).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise Invalid(
            f"Cannot tell the format of {file!r} from its extension; pass --format csv|jsonl."
        )
    return _EXTENSIONS[suffix]


async def _import(
    settings: Settings, file: str, file_format: str, *, allow_partial: bool
) -> Outcome:
    from storage.imports import ticket_import

    dsn = await database_url(settings)
    with _open(file) as stream:
        bar, progress = _progress_bar(_size_of(stream))
        reader = TicketReader(
            stream, file_format=file_format, keep_bad=SHOWN_BAD_ROWS, progress=progress
        )
        started = time.perf_counter()
        try:
            # Reads a CSV's header now, so a file that cannot be read fails before the bar.
            rows = reader.rows(all_or_nothing=not allow_partial)
        except UnreadableFile as exc:
            raise Invalid(f"{file}: {exc}") from exc
        imported, committed = 0, False
        with bar:
            try:
                async with ticket_import(dsn) as target:
                    imported = await target.copy(rows)
                    if reader.bad_count and not allow_partial:
                        raise _Rejected
                committed = True
            except _Rejected:
                imported = 0
            bar.finish()
        elapsed_s = time.perf_counter() - started
    return Outcome(
        imported=imported,
        good=reader.good_count,
        bad_count=reader.bad_count,
        bad=reader.bad,
        elapsed_s=elapsed_s,
        committed=committed,
    )


@contextlib.contextmanager
def _open(file: str) -> Iterator[BinaryIO]:
    if file == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = open(file, "rb", buffering=_READ_BUFFER_BYTES)  # noqa: SIM115
    except OSError as exc:
        raise Invalid(f"Cannot read {file!r}: {exc.strerror}.") from exc
    with stream:
        yield stream


def _size_of(stream: BinaryIO) -> int | None:
    """The byte size of a regular file (stdin redirected from one counts); None for pipes."""
    try:
        status = os.fstat(stream.fileno())
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


class _Bar(Progress):
    def finish(self) -> None:
        """Show a full bar: with no known size, the total is what was read."""
        task = self.tasks[0]
        if task.total is None:
            self.update(task.id, total=task.completed)


def _progress_bar(size: int | None) -> tuple[_Bar, ProgressCallback]:
    """A rich progress bar on stderr (not started yet) and the callback that moves it:
    bytes of the file's size when known, else rows."""
    # Not a terminal (a pipe, a log): rich prints the bar's final state once, when it stops.
    console = Console(stderr=True)
    rows = TextColumn("{task.fields[rows]:,} rows")
    if size is not None:
        columns = [
            TextColumn("importing"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            rows,
            TimeRemainingColumn(),
        ]
    else:
        columns = [TextColumn("importing"), BarColumn(), rows, TimeElapsedColumn()]
    bar = _Bar(*columns, console=console)
    task = bar.add_task("import", total=size, rows=0)

    def update(bytes_read: int, rows_read: int) -> None:
        bar.update(task, completed=bytes_read if size is not None else rows_read, rows=rows_read)

    return bar, update


def _report_bad(outcome: Outcome) -> None:
    if not outcome.bad_count:
        return
    echo = click.echo
    echo(f"{outcome.bad_count:,} bad row(s):", err=True)
    for row in outcome.bad:
        echo(f"  line {row.line}: {row.reason}", err=True)
    hidden = outcome.bad_count - len(outcome.bad)
    if hidden:
        echo(f"  … and {hidden:,} more", err=True)
