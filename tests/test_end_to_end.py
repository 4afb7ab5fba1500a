"""End to end: the Discord cogs, the real planner against a fake Anthropic Messages API on
127.0.0.1, the real controller on tiny random-weight models in the GPU worker process, and a real
SQLite file. /imagine, plan shown, render, follow-up, reroll by reaction, undo, a restart of the
whole bot, an old button after the restart, and another follow-up in the same thread."""

from __future__ import annotations

import json
import re

import discord
import pytest

from cogs._notifier import DiscordNotifier
from cogs._views import LayoutButton
from cogs.imagine import ImagineCog
from lmd_bot.services import open_core
from tests.cogs.conftest import eventually, recorded
from tests.cogs.fakes import FakeDiscord, reaction
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.services.conftest import make_settings

pytestmark = pytest.mark.slow

OWNER = 1
RENDER_TIMEOUT = 240  # tiny models on a loaded 2-core machine: seconds, not minutes, but be patient


def _results(fake, thread_id):
    return [m for m in fake.in_channel(thread_id) if m.field("Seed") and m.files]


async def _start(settings, fake: FakeDiscord | None):
    core = await open_core(settings)
    if fake is None:
        fake = FakeDiscord(core.scenes)
    fake.bot.scenes = core.scenes  # the same Discord, a new bot process
    core.scenes.attach(DiscordNotifier(fake.bot))
    await core.scenes.start()
    cog = ImagineCog(fake.bot, core.scenes, archive_minutes=1440, content_intent=True)
    return core, fake, cog


async def test_scene_survives_a_restart_of_the_whole_bot(tmp_path, monkeypatch):
    # One OpenMP thread in the worker process: on a busy 2-core machine, torch's spinning threads
    # fight the other test processes and a tiny render takes ten times longer.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    async with FakeAnthropic(api_key="test-key") as claude:
        settings = make_settings(
            tmp_path,
            planner={"api_key": "test-key", "base_url": claude.base_url, "max_retries": 0},
            queue={"renderer": "tiny", "job_timeout_s": RENDER_TIMEOUT, "worker_start_timeout_s": 120},
            diffusion={"mode": "lmd", "steps": 1, "size": 256, "use_sam": False},
        )
        core, fake, cog = await _start(settings, None)
        try:
            # /imagine: the plan appears, a thread opens, the render lands in it.
            claude.push_layout(
                [("a red apple", (40, 300, 90, 90)), ("a blue cup", (300, 280, 80, 100))],
                background="A kitchen table",
            )
            inter = fake.interaction(OWNER)
            prompt = "a red apple on a table left of a blue cup"
            await ImagineCog.imagine.callback(cog, inter, prompt=prompt, mode=None, seed=1234, steps=None)
            inter.response.defer.assert_awaited_once_with(thinking=True)
            plan = fake.original
            assert plan.embeds[0].description.splitlines() == ["` 1` a red apple", "` 2` a blue cup"]
            assert "Background: A kitchen table" in plan.field("Scene")
            thread = plan.thread
            first = (await eventually(lambda: _results(fake, thread.id), RENDER_TIMEOUT))[0]
            assert first.field("Seed") == "`1234`" and first.field("Mode") == "lmd"
            assert first.files == ["round1-seed1234-image.png", "round1-seed1234-overlay.png"]

            # A follow-up in the thread: the planner sees the scene so far; same seed.
            claude.push_layout(
                [("a red apple", (40, 300, 90, 90), 1), ("a blue cup", (400, 280, 80, 100), 2)],
                background="A kitchen table",
            )
            await cog.on_message(fake.message(OWNER, thread, "move the cup to the right"))
            revised = next(m for m in fake.in_channel(thread.id) if m.embeds[0:1] and m.field("Changed"))
            assert revised.field("Changed") == "moved: a blue cup"
            assert [m["content"] for m in claude.bodies[1]["messages"] if m["role"] == "user"] == [
                f"Caption: {prompt}",
                "Edit: move the cup to the right",
            ]
            second = (await eventually(lambda: _results(fake, thread.id)[1:], RENDER_TIMEOUT))[0]
            assert second.embeds[0].title == "Round 2" and second.field("Seed") == "`1234`"

            # 🔄 on the result: the same layout with a new seed, as round 3. The result is a new
            # message, recorded right after it is posted: react once it is (as a person would).
            await recorded(core, second.id, RENDER_TIMEOUT)
            await cog.on_raw_reaction_add(reaction(fake, second.id, thread.id, OWNER))
            third = (await eventually(lambda: _results(fake, thread.id)[2:], RENDER_TIMEOUT))[0]
            assert third.embeds[0].title == "Round 3" and third.field("Seed") != "`1234`"

            # Undo: back to round 2 (no planner call, no render).
            await cog.on_message(fake.message(OWNER, thread, "undo"))
            back = fake.in_channel(thread.id)[-1]
            assert back.content == "Back to round 2" and back.field("Seed") == "`1234`"
            assert len(claude.bodies) == 2
        finally:
            await core.close()

        # The whole bot restarts: a new process, the same database and the same Discord.
        core, fake, cog = await _start(settings, fake)
        try:
            layout_id = next(cid for cid in first.custom_ids if cid.startswith("lmd:layout:"))
            inter = fake.interaction(OWNER, thread)
            match = re.fullmatch(LayoutButton.__discord_ui_compiled_template__, layout_id)
            item = await LayoutButton.from_custom_id(inter, discord.ui.Button(custom_id=layout_id), match)
            await item.callback(inter)
            shown = json.loads(inter.response.send_message.await_args.args[0].strip("`").removeprefix("json"))
            assert [o["caption"] for o in shown["objects"]] == ["a red apple", "a blue cup"]

            claude.push_layout(
                [
                    ("a red apple", (40, 300, 90, 90), 1),
                    ("a blue cup", (400, 280, 80, 100), 2),
                    ("a sleeping cat", (150, 420, 160, 80), 0),
                ],
                background="A kitchen table",
            )
            await cog.on_message(fake.message(OWNER, thread, "add a cat under the table"))
            users = [m["content"] for m in claude.bodies[2]["messages"] if m["role"] == "user"]
            assert users == [
                f"Caption: {prompt}",
                "Edit: move the cup to the right",
                "Edit: add a cat under the table",
            ]
            fourth = (await eventually(lambda: _results(fake, thread.id)[4:], RENDER_TIMEOUT))[0]
            assert fourth.embeds[0].title == "Round 4" and fourth.field("Seed") == "`1234`"
            assert "a sleeping cat" in fourth.embeds[0].description
            scene = await core.scenes.scene_for_thread(thread.id)
            rounds = await core.repo.rounds(scene.id)
            assert rounds[scene.head_round_id].parent_id == next(
                r.id for r in rounds.values() if r.number == 2
            )
        finally:
            await core.close()
