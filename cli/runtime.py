"""How the process that runs the dispatcher is tuned: `tickets serve`, and the benchmark's
in-process dispatcher, which measures the dispatcher as served."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")

# uvloop: the same asyncio semantics on libuv, measurably faster for many connections.
new_event_loop = uvloop.new_event_loop


def tune_garbage_collector() -> tuple[int, int, int]:
    """Collect rarely: the dispatcher keeps a large heap of long-lived objects (the window,
    holdings, recent decisions) that every full collection walks, and those pauses were the
    tail of the latency (`make bench`: p99 at 100 connections 78 ms → 43 ms). Objects from
    start-up are frozen out of collection altogether."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    return previous


def restore_garbage_collector(threshold: tuple[int, int, int]) -> None:
    gc.unfreeze()
    gc.set_threshold(*threshold)


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the service's event loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
