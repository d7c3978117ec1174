"""structlog set-up: JSON lines when stdout is not a terminal, readable colour when it is.

The libraries' own records (aiohttp's HTTP server, asyncpg's pool, asyncio) go through the
same renderer, so a log stays one JSON object per line whoever wrote it.
"""

from __future__ import annotations

import logging
import sys

import structlog
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

# Fields a library record may carry into its line (set by the filters below).
_LIBRARY_FIELDS = ("status", "error", "remote")
# The root handler configure() installed, replaced when it runs again.
_library_handler: logging.Handler | None = None


def configure(*, level: str = "info", log_format: str | None = None) -> None:
    as_json = (log_format or ("console" if sys.stdout.isatty() else "json")) == "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    exceptions: structlog.typing.Processor = (
        structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info
    )
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            exceptions,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    _route_library_records(threshold, renderer, exceptions)


def _route_library_records(
    threshold: int, renderer: structlog.typing.Processor, exceptions: structlog.typing.Processor
) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(allow=_LIBRARY_FIELDS),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                exceptions,
                renderer,
            ],
        )
    )
    global _library_handler
    root = logging.getLogger()
    if _library_handler is not None:  # configured before (tests, a second CLI call)
        root.removeHandler(_library_handler)
    _library_handler = handler
    root.addHandler(handler)
    # Libraries log freely at debug (asyncio, asyncpg); ours stay at LOG_LEVEL, theirs
    # at warning or above unless LOG_LEVEL is stricter still.
    root.setLevel(max(threshold, logging.WARNING))
    # aiohttp logs an unknown method on a connection's first request at debug (scanners,
    # TLS sent to a plain port): the logger lets everything through to the filter, which
    # turns every malformed request into its info line and holds the rest to the threshold.
    server = logging.getLogger("aiohttp.server")
    server.setLevel(logging.DEBUG)
    for stale in [f for f in server.filters if isinstance(f, MalformedRequestFilter)]:
        server.removeFilter(stale)
    server.addFilter(MalformedRequestFilter(threshold=max(threshold, logging.INFO)))


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (bad header bytes, a line too long, a bad
    chunk size, a body that does not decode as its Content-Encoding says) as an error with
    a traceback whose message quotes the offending bytes: an Authorization header among
    them, a token would reach the log. Anyone can send one, so it is a client's mistake,
    not the server's: one info line naming the error's kind."""

    def __init__(self, *, threshold: int) -> None:
        super().__init__()
        self._threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RequestPayloadError):
            # A body's error comes wrapped: aiohttp meets it again when it drains the body
            # after the handler's answer, and logs it as an "Unhandled exception".
            error = error.__cause__
        if not isinstance(error, HttpProcessingError):
            return record.levelno >= self._threshold
        if isinstance(record.args, tuple) and record.args:
            record.remote = str(record.args[0])  # "Error handling request from %s"
        record.msg, record.args = "bad_http_request", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        record.status = error.code or 400
        record.error = type(error).__name__
        return record.levelno >= self._threshold
