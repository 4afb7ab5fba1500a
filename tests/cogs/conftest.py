from __future__ import annotations

import asyncio

import pytest

from cogs._notifier import DiscordNotifier
from lmd_bot.testing import ScriptedPlanner
from tests.cogs.fakes import FakeDiscord
from tests.services.conftest import make_settings


async def eventually(predicate, timeout: float = 20.0):
    """Poll ``predicate`` until it returns something truthy (background deliveries)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def recorded(core, message_id: int, timeout: float = 20.0) -> None:
    """Wait until a posted result is linked to its round. The link is written right after the
    message is posted, so a test that reacts at once could beat it; a person never does."""
    await eventually_async(lambda: core.repo.message(message_id), timeout)


async def eventually_async(probe, timeout: float = 20.0):
    """``eventually`` for a coroutine-returning probe (e.g. a database read)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def start_discord(tmp_path, renderer=None, **sections):
    from lmd_bot.jobs.renderers import RendererSpec
    from lmd_bot.services import open_core

    settings = make_settings(tmp_path, **sections)
    seeds = iter(range(5000, 5100))
    core = await open_core(
        settings,
        planner=ScriptedPlanner(),
        renderer=renderer or RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer"),
        new_seed=lambda: next(seeds),
    )
    fake = FakeDiscord(core.scenes)
    core.scenes.attach(DiscordNotifier(fake.bot))
    await core.scenes.start()
    return core, fake


@pytest.fixture
async def discord_core(tmp_path):
    core, fake = await start_discord(tmp_path)
    try:
        yield core, fake
    finally:
        await core.close()
