"""/queue, /info and /settings through their callbacks; the tree's error handler; and bot.py's
start-up wiring (cogs, commands, persistent buttons) without connecting to Discord."""

from __future__ import annotations

import discord

from bot import build_bot
from cogs._common import GENERIC_ERROR, on_app_command_error
from cogs._views import DYNAMIC_ITEMS
from cogs.admin import AdminCog
from lmd_bot.errors import PlannerBusyError
from tests.cogs.conftest import eventually
from tests.cogs.test_imagine_cog import OTHER, OWNER, _imagine, _result_in


async def test_queue_and_info_answer_privately(discord_core):
    core, fake = discord_core
    await _imagine(core, fake, prompt="a red apple", seed=99)
    thread = fake.original.thread
    await eventually(lambda: _result_in(fake, thread.id))
    cog = AdminCog(core.scenes)
    inter = fake.interaction(OWNER)
    await AdminCog.queue.callback(cog, inter)
    embed = inter.response.send_message.await_args.kwargs["embed"]
    assert embed.title == "Queue" and inter.response.send_message.await_args.kwargs["ephemeral"]
    inter = fake.interaction(OWNER)
    await AdminCog.info.callback(cog, inter)
    embed = inter.response.send_message.await_args.kwargs["embed"]
    assert "seed `99`" in embed.description and "a red apple" in embed.description
    assert f"<#{thread.id}>" in embed.description


async def test_settings_show_to_anyone_change_for_admins_only(discord_core):
    core, fake = discord_core
    cog = AdminCog(core.scenes)
    inter = fake.interaction(OTHER)
    await AdminCog.settings.callback(cog, inter)
    shown = inter.followup.send.await_args.kwargs["embed"]
    assert any(f.name == "Steps" and "`4`" in f.value and "(default)" in f.value for f in shown.fields)

    denied = fake.interaction(OTHER)
    try:
        await AdminCog.settings.callback(cog, denied, steps=12)
    except Exception as exc:
        await on_app_command_error(denied, discord.app_commands.CommandInvokeError(AdminCog.settings, exc))
    assert "admins" in denied.followup.send.await_args.args[0]

    admin = fake.interaction(OTHER, admin=True)
    channel = fake.text_channel(55)
    safety = discord.app_commands.Choice(name="withhold", value="withhold")
    await AdminCog.settings.callback(cog, admin, steps=12, safety=safety, allow_channel=channel)
    shown = admin.followup.send.await_args.kwargs["embed"]
    values = {f.name: f.value for f in shown.fields}
    assert "`12`" in values["Steps"] and "`withhold`" in values["Safety"] and "<#55>" in values["Channels"]
    stored = await core.repo.server_settings(100)
    assert stored.steps == 12 and stored.allowed_channel_ids == [55]
    # /imagine now only works in #55.
    inter = fake.interaction(OWNER)
    from cogs.imagine import ImagineCog

    imagine = ImagineCog(fake.bot, core.scenes, archive_minutes=60, content_intent=True)
    try:
        await ImagineCog.imagine.callback(imagine, inter, prompt="a cat", mode=None, seed=None, steps=None)
    except Exception as exc:
        await on_app_command_error(inter, discord.app_commands.CommandInvokeError(ImagineCog.imagine, exc))
    assert "not set up to work here" in inter.response.send_message.await_args.args[0]


async def test_error_handler_answers_after_a_defer_and_hides_unexpected_errors(discord_core):
    _, fake = discord_core
    inter = fake.interaction(OWNER)
    await inter.response.defer()
    err = discord.app_commands.CommandInvokeError(AdminCog.queue, PlannerBusyError("x"))
    await on_app_command_error(inter, err)
    inter.followup.send.assert_awaited_once()
    said = inter.followup.send.await_args
    assert said.args == ("The layout service is busy; try again in a minute.",) and said.kwargs["ephemeral"]
    inter = fake.interaction(OWNER)
    await on_app_command_error(
        inter, discord.app_commands.CommandInvokeError(AdminCog.queue, KeyError("boom"))
    )
    inter.response.send_message.assert_awaited_once()
    said = inter.response.send_message.await_args
    assert said.args == (GENERIC_ERROR,) and said.kwargs["ephemeral"]


async def test_bot_setup_loads_cogs_registers_buttons_and_closes_the_core(tmp_path):
    from lmd_bot.jobs.renderers import RendererSpec
    from lmd_bot.services import open_core
    from lmd_bot.testing import ScriptedPlanner
    from tests.services.conftest import make_settings

    core = await open_core(
        make_settings(tmp_path, discord={"message_content_intent": False}),
        planner=ScriptedPlanner(),
        renderer=RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer"),
    )
    bot = build_bot(core)
    assert bot.intents.message_content is False and bot.intents.reactions
    await bot.setup_hook()
    names = sorted(c.name for c in bot.tree.get_commands())
    assert names == ["imagine", "info", "queue", "settings", "share"]
    assert len(bot._connection._view_store._dynamic_items) == len(DYNAMIC_ITEMS) == 9
    await bot.close()
    assert core.closed
