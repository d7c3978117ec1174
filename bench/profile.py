"""Where the server's time goes: py-spy attached to the running server, summarised.

py-spy is not a project dependency: install it outside the project's venv, e.g.
`python3 -m pip install --target /tmp/py-spy py-spy` (bench/run.sh does that for --profile),
or point PY_SPY at a binary.

Samples whose innermost frame is a wait (epoll, an idle pool thread) are left out; the rest
are time the process spent on the CPU or in a system call. The summary attributes each to one
bucket, walking its stack from the innermost frame
outwards and taking the first frame that names a bucket; it also counts, per probe, the share
of samples that have a given function anywhere on the stack (inclusive time).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import communicate_within

# (bucket, substrings of a frame "function (file)") — checked innermost frame first.
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("json encoding (json.dumps)", ("json/encoder.py", "json/__init__.py")),
    ("json decoding (json.loads)", ("json/decoder.py",)),
    ("pydantic (validate / dump to JSON types)", ("pydantic", "TypeAdapter")),
    ("logging (structlog)", ("structlog",)),
    ("request id (uuid4)", ("uuid.py",)),
    ("auth (token digest, cache, lookup)", ("web/auth.py", "hashlib", "hmac.py")),
    ("dispatcher core (decisions)", ("dispatcher/core.py", "dispatcher/ticket_queue.py")),
    ("dispatcher actor (batching, replies)", ("dispatcher/actor.py", "dispatcher/batch.py")),
    ("storage (leader connection, pool)", ("storage/",)),
    ("asyncpg (protocol, codecs)", ("asyncpg",)),
    ("aiohttp (HTTP parse, routing, response write)", ("aiohttp", "multidict", "yarl")),
    ("web handlers and middlewares", ("web/",)),
    ("socket writes and reads (system calls)", ("selector_events.py", "socket.py")),
    ("asyncio event loop", ("asyncio/",)),
]

# Leaves that are a thread waiting, which py-spy does not always recognise as idle: the event
# loop blocked in epoll, and idle thread-pool workers (password hashing, getaddrinfo).
WAITING: tuple[str, ...] = ("EpollSelector.select", "_worker (concurrent/futures/thread.py)")

# (probe, substrings that must appear in one frame) — inclusive time.
PROBES: list[tuple[str, tuple[str, ...]]] = [
    ("handler fetch_tickets", ("fetch_tickets (",)),
    ("handler sell_tickets", ("sell_tickets (",)),
    ("json_response (pydantic dump + json.dumps)", ("json_response (",)),
    ("parse_body (json.loads + pydantic)", ("parse_body (",)),
    ("principal (auth)", ("principal (",)),
    ("request_context_middleware", ("request_context_middleware (",)),
    ("dispatcher batch (_trade)", ("_trade (",)),
    ("dispatcher _prepare", ("_prepare (",)),
    ("dispatcher _sale_facts", ("_sale_facts (",)),
    ("commit_batch (the write)", ("commit_batch (",)),
    ("payloads (read of held tickets)", ("payloads (",)),
    ("dispatcher _ticket dicts", ("_ticket (",)),
    ("asyncpg, anywhere", ("asyncpg",)),
    ("structlog, anywhere", ("structlog",)),
    ("uuid4, anywhere", ("uuid4 (",)),
]


def find_py_spy() -> str | None:
    for candidate in (os.environ.get("PY_SPY"), shutil.which("py-spy"), "/tmp/py-spy/bin/py-spy"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


async def record(pid: int, *, duration_s: float, output: Path, rate: int = 200) -> int:
    """Sample `pid` for `duration_s` into a raw (collapsed stacks) file; returns py-spy's code."""
    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("py-spy not found: pip install --target /tmp/py-spy py-spy")
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nolineno",
        "--output",
        str(output),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await communicate_within(process, duration_s + 60)
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {stderr.decode(errors='replace')[-2000:]}")
    return process.returncode


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(raw: Path, *, top: int = 25) -> dict[str, Any]:
    everything = _stacks(raw)
    stacks = [(f, n) for f, n in everything if not any(w in f[-1] for w in WAITING)]
    waiting = sum(n for _, n in everything) - sum(n for _, n in stacks)
    total = sum(count for _, count in stacks) or 1
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    probes: Counter[str] = Counter()
    for frames, count in stacks:
        leaves[frames[-1]] += count
        for frame in reversed(frames):
            bucket = next((name for name, keys in BUCKETS if any(k in frame for k in keys)), None)
            if bucket is not None:
                buckets[bucket] += count
                break
        else:
            buckets[f"other: {frames[-1]}"] += count
        for name, keys in PROBES:
            if any(all(k in frame for k in keys) for frame in frames):
                probes[name] += count

    def share(counter: Counter[str], limit: int | None = None) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "waiting_samples_left_out": waiting,
        "buckets_pct": share(buckets),
        "inclusive_pct": share(probes),
        "top_self_pct": share(leaves, top),
    }
