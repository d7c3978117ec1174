"""The load generators: wrk with bench/fetch_sell.lua (the benchmark), or an aiohttp client loop
(the smoke test, and machines without wrk). Both drive the same cycle — each agent fetches,
then sells the ids it got, then fetches again, with one request in flight per agent — and
return the same dict (the keys of the Lua script's BENCH_RESULT line).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import FETCH_PATH, SELL_PATH, communicate_within

LUA = Path(__file__).parent / "fetch_sell.lua"
_COUNTERS = (
    "fetches",
    "sells",
    "fetched_tickets",
    "sold_tickets",
    "fetch_non200",
    "sell_non200",
    "empty_fetches",
    "unmatched",
    "spares",
    "status_401",
    "status_403",
    "status_409",
    "status_429",
    "status_5xx",
    "status_other",
)


def wrk_path() -> str | None:
    return shutil.which("wrk")


async def drive_wrk(
    url: str,
    tokens_file: Path,
    *,
    connections: int,
    threads: int,
    duration_s: float,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Run wrk for `duration_s`; `connections` agents (the first lines of tokens_file)."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed (bench/run.sh installs it with apt-get)")
    if connections % threads:
        raise ValueError("connections must be a multiple of threads (one agent per connection)")
    command = [
        wrk,
        "--threads",
        str(threads),
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{round(timeout_s)}s",
        "--latency",
        "--script",
        str(LUA),
        url,
        "--",
        str(tokens_file),
        str(connections // threads),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await communicate_within(process, duration_s + 60)
    text = stdout.decode(errors="replace")
    result: dict[str, Any] | None = None
    for line in text.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
    if process.returncode != 0 or result is None:
        raise RuntimeError(
            f"wrk failed ({process.returncode}): {stderr.decode(errors='replace')}\n{text}"
        )
    result["driver"] = "wrk"
    result["pid"] = process.pid
    result["wrk_output"] = text
    return result


def _percentile_us(ordered: list[float], p: float) -> int:
    if not ordered:
        return 0
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return int(ordered[index] * 1e6)


async def drive_aiohttp(
    url: str,
    tokens: list[str],
    *,
    duration_s: float,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One task per token (agent), each cycling fetch -> sell until the deadline."""
    counts = dict.fromkeys(_COUNTERS, 0)
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s

    async def post(
        session: aiohttp.ClientSession, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        began = time.perf_counter()
        try:
            async with session.post(url + path, headers=headers, json=body) as response:
                payload = await response.json() if response.status == 200 else await response.read()
                status = response.status
        except TimeoutError:
            errors["timeout"] += 1
            return 0, None
        except aiohttp.ClientConnectionError:
            errors["read"] += 1
            return 0, None
        latencies.append(time.perf_counter() - began)
        if status > 399:
            errors["status"] += 1
        if status != 200:
            if status in (401, 403, 409, 429):
                counts[f"status_{status}"] += 1
            elif status >= 500:
                counts["status_5xx"] += 1
            else:
                counts["status_other"] += 1
        return status, payload

    async def agent(session: aiohttp.ClientSession, token: str) -> None:
        headers = {"Authorization": f"Token {token}"}
        while time.perf_counter() < deadline:
            counts["fetches"] += 1
            status, payload = await post(session, FETCH_PATH, headers, None)
            if status != 200:
                counts["fetch_non200"] += 1
                continue
            ids = [ticket["id"] for ticket in payload["tickets"]]
            if not ids:
                counts["empty_fetches"] += 1
                continue
            counts["fetched_tickets"] += len(ids)
            if time.perf_counter() >= deadline:
                break
            counts["sells"] += 1
            status, payload = await post(session, SELL_PATH, headers, {"ticket_ids": ids})
            if status == 200:
                counts["sold_tickets"] += len(payload["sold"])
            else:
                counts["sell_non200"] += 1

    connector = aiohttp.TCPConnector(limit=len(tokens), force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(agent(session, token) for token in tokens))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    result: dict[str, Any] = {
        "driver": "aiohttp",
        "duration_us": int(elapsed * 1e6),
        "requests": len(latencies),
        "bytes": 0,
        **{f"errors_{name}": value for name, value in errors.items()},
        "latency_mean_us": (sum(ordered) / len(ordered) * 1e6) if ordered else 0.0,
        "latency_max_us": int(ordered[-1] * 1e6) if ordered else 0,
        **{f"latency_p{p}_us": _percentile_us(ordered, p) for p in (50, 75, 90, 99, 99.9)},
        **counts,
    }
    return result
