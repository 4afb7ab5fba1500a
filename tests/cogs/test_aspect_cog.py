"""``/imagine … aspect:`` and "make it wide" in the thread, through the scene cog."""

from __future__ import annotations

import discord
from PIL import Image

from cogs.imagine import ASPECTS, ImagineCog
from lmd_bot.layout.canvas import Aspect, Canvas
from tests.cogs.conftest import eventually

OWNER = 1


def _results(fake, thread):
    return [m for m in fake.in_channel(thread.id) if m.field("Seed")]


async def test_imagine_with_an_aspect_plans_on_its_canvas_and_make_it_wide_follows(discord_core):
    core, fake = discord_core
    assert [c.value for c in ASPECTS] == [a.value for a in Aspect]
    cog = ImagineCog(fake.bot, core.scenes, archive_minutes=1440, content_intent=True)
    wide = discord.app_commands.Choice(name="16:9 wide", value="16:9")
    await ImagineCog.imagine.callback(
        cog,
        fake.interaction(OWNER),
        prompt="a red apple, a blue cup",
        mode=None,
        seed=4,
        steps=None,
        aspect=wide,
    )
    assert core.planner.canvases == [Canvas(512, 320)]
    plan = fake.original
    assert "canvas 512x320" in plan.field("Scene")
    thread = plan.thread
    await eventually(lambda: _results(fake, thread))
    job = await core.repo.job(1)
    assert Image.open(job.image_path).size == (512, 320)

    await cog.on_message(fake.message(OWNER, thread, "make it tall"))
    assert core.planner.canvases[-1] == Canvas(320, 512)
    revised = [m for m in fake.in_channel(thread.id) if m.embeds and m.embeds[0].title == "Plan · round 2"]
    assert revised[0].field("Changed") == "canvas: 512x320 → 320x512"
