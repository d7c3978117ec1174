"""The world the permission and validation tests share: arranged once per module, served
once for everything that must change nothing (tests/support/world.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.support.world import Served, World, arrange_world, drop_world, serve_copy


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(template_ready: str) -> AsyncIterator[World]:
    arranged = await arrange_world(template_ready)
    yield arranged
    await drop_world(arranged)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(world: World) -> AsyncIterator[Served]:
    """One copy for every cell that must not change anything."""
    async with serve_copy(world) as served:
        yield served
