"""The scene cog driven like Discord would: slash-command callbacks with mocked interactions,
thread messages, raw reaction events, and persistent buttons rebuilt from their custom ids."""

from __future__ import annotations

import re

import discord

from cogs._common import on_app_command_error
from cogs._views import (
    DYNAMIC_ITEMS,
    CancelButton,
    EditButton,
    EditModal,
    LayoutButton,
    PickButton,
    RerollButton,
    UndoButton,
)
from cogs.imagine import ImagineCog
from lmd_bot.errors import LmdError
from lmd_bot.scenes.models import JobStatus
from tests.cogs.conftest import eventually, eventually_async, recorded, start_discord
from tests.cogs.fakes import BOT_ID, reaction
from tests.jobs.renderers import spec

OWNER, OTHER = 1, 2


def _cog(core, fake, *, content_intent: bool = True) -> ImagineCog:
    return ImagineCog(fake.bot, core.scenes, archive_minutes=1440, content_intent=content_intent)


async def _imagine(core, fake, prompt="a red apple, a blue cup", **options):
    cog = _cog(core, fake)
    inter = fake.interaction(OWNER)
    await ImagineCog.imagine.callback(
        cog, inter, prompt=prompt, **{"mode": None, "seed": None, "steps": None, **options}
    )
    return cog, inter


def _result_in(fake, thread_id):
    return [m for m in fake.in_channel(thread_id) if m.field("Seed")]


async def _button(cls, inter, custom_id):
    match = re.fullmatch(cls.__discord_ui_compiled_template__, custom_id)
    item = await cls.from_custom_id(inter, discord.ui.Button(custom_id=custom_id), match)
    await item.callback(inter)
    return item


async def test_imagine_defers_shows_the_plan_opens_a_thread_and_renders(discord_core):
    core, fake = discord_core
    _, inter = await _imagine(core, fake, prompt="a red apple, a blue cup", seed=31337)
    inter.response.defer.assert_awaited_once_with(thinking=True)
    plan = fake.original
    assert plan.files == ["plan.png"] and plan.embeds[0].title == "Plan · round 1"
    assert "a red apple" in plan.embeds[0].description and "seed 31337" in plan.field("Scene")
    thread = plan.thread
    assert thread is not None and thread.name == "a red apple, a blue cup"
    result = (await eventually(lambda: _result_in(fake, thread.id)))[0]
    # The reaction and the status's last edit follow the result's post: wait for the last of them.
    await eventually(lambda: fake.in_channel(thread.id)[0].content.startswith("✅"))
    assert result.field("Seed") == "`31337`" and result.embeds[0].title == "Round 1"
    assert result.files == ["round1-seed31337-image.png", "round1-seed31337-overlay.png"]
    rid = (await core.repo.scene_by_thread(thread.id)).head_round_id
    assert result.custom_ids == [
        f"lmd:reroll:{rid}",
        f"lmd:undo:{rid}",
        f"lmd:edit:{rid}",
        f"lmd:layout:{rid}",
    ]
    assert result.reactions == ["🔄"]
    assert result.content == f"<@{OWNER}> round 1 is ready."  # a new message: it pings the owner
    status, _ = fake.in_channel(thread.id)
    assert status.content.startswith("✅ Round 1: done")


async def test_missing_permissions_are_named_and_nothing_is_planned(discord_core):
    core, fake = discord_core
    cog = _cog(core, fake)
    perms = discord.Permissions.all()
    perms.create_public_threads = False
    perms.attach_files = False
    inter = fake.interaction(OWNER, app_permissions=perms)
    await ImagineCog.imagine.callback(cog, inter, prompt="a cat", mode=None, seed=None, steps=None)
    text = inter.response.send_message.await_args.args[0]
    assert "**Attach Files**" in text and "**Create Public Threads**" in text
    assert inter.response.send_message.await_args.kwargs["ephemeral"] is True
    inter.response.defer.assert_not_awaited()
    assert core.planner.calls == []


async def test_a_banned_prompt_is_refused_privately_before_deferring(tmp_path):
    core, fake = await start_discord(tmp_path, guard={"banned_words": ["gore"]})
    try:
        cog = _cog(core, fake)
        inter = fake.interaction(OWNER)
        try:
            await ImagineCog.imagine.callback(
                cog, inter, prompt="lots of gore", mode=None, seed=None, steps=None
            )
        except LmdError as exc:
            # discord.py hands what a command raises to the tree's error handler.
            await on_app_command_error(
                inter, discord.app_commands.CommandInvokeError(ImagineCog.imagine, exc)
            )
        inter.response.defer.assert_not_awaited()
        inter.response.send_message.assert_awaited_once()
        said = inter.response.send_message.await_args
        assert said.args == ("That prompt isn't allowed here.",) and said.kwargs["ephemeral"]
    finally:
        await core.close()


async def test_planner_trouble_replaces_the_thinking_message(discord_core):
    core, fake = discord_core
    await _imagine(core, fake, prompt="fail at this")
    assert fake.original.content.startswith("I couldn't lay this out")
    assert fake.original.thread is None


async def test_owner_instruction_in_the_thread_revises_and_renders(discord_core):
    core, fake = discord_core
    cog, _ = await _imagine(core, fake, seed=8)
    thread = fake.original.thread
    await eventually(lambda: _result_in(fake, thread.id))
    message = fake.message(OWNER, thread, "move apple right")
    await cog.on_message(message)
    assert fake.messages[message.id].reactions == ["👀"]
    plan = next(m for m in fake.in_channel(thread.id) if m.embeds and m.embeds[0].title == "Plan · round 2")
    assert plan.field("Changed") == "moved: a red apple" and plan.files == ["plan.png"]
    results = await eventually(lambda: len(_result_in(fake, thread.id)) == 2 and _result_in(fake, thread.id))
    assert results[1].embeds[0].title == "Round 2" and results[1].field("Seed") == "`8`"


async def test_someone_else_addressing_the_bot_gets_a_quiet_hint_and_nothing_is_queued(discord_core):
    core, fake = discord_core
    cog, _ = await _imagine(core, fake)
    thread = fake.original.thread
    await eventually(lambda: _result_in(fake, thread.id))
    message = fake.message(OTHER, thread, f"<@{BOT_ID}> add a cat", mentions_bot=True)
    await cog.on_message(message)
    hint = fake.in_channel(thread.id)[-1]
    assert hint.content.startswith(f"Only <@{OWNER}> edits this scene")
    assert hint.kwargs["delete_after"] and hint.kwargs["silent"]
    assert len(core.planner.calls) == 1 and await core.repo.count_active_jobs(OTHER) == 0


async def test_without_the_content_intent_only_mentions_count(discord_core):
    core, fake = discord_core
    await _imagine(core, fake)
    thread = fake.original.thread
    await eventually(lambda: _result_in(fake, thread.id))
    cog = _cog(core, fake, content_intent=False)
    await cog.on_message(fake.message(OWNER, thread, "add a cat"))
    assert len(core.planner.calls) == 1  # ignored: not addressed to the bot
    await cog.on_message(fake.message(OWNER, thread, f"<@{BOT_ID}>", mentions_bot=True))
    assert "/imagine" in fake.in_channel(thread.id)[-1].content  # a bare mention gets the help
    await cog.on_message(fake.message(OTHER, fake.text, f"<@{BOT_ID}>", mentions_bot=True))
    assert "/imagine" in fake.in_channel(fake.text.id)[-1].content  # in any channel
    await cog.on_message(fake.message(OWNER, thread, f"<@{BOT_ID}> add a cat", mentions_bot=True))
    _, _, instruction = core.planner.calls[-1]
    assert instruction == "add a cat"


async def test_a_question_gets_an_answer_and_no_render(discord_core):
    core, fake = discord_core
    cog, _ = await _imagine(core, fake)
    thread = fake.original.thread
    await eventually(lambda: _result_in(fake, thread.id))
    await cog.on_message(fake.message(OWNER, thread, "what can you do?"))
    assert fake.in_channel(thread.id)[-1].content == "I can add, remove and move objects."
    assert len(await core.repo.rounds(1)) == 1


async def test_reroll_reaction_on_a_result_renders_a_new_seed_and_clears_the_reaction(discord_core):
    core, fake = discord_core
    cog, _ = await _imagine(core, fake, seed=1)
    thread = fake.original.thread
    result = (await eventually(lambda: _result_in(fake, thread.id)))[0]
    await recorded(core, result.id)
    await cog.on_raw_reaction_add(reaction(fake, result.id, thread.id, OWNER))
    assert fake.messages[result.id].removed_reactions == [("🔄", OWNER)]
    rerolled = await eventually(
        lambda: len(_result_in(fake, thread.id)) == 2 and _result_in(fake, thread.id)[1]
    )
    assert rerolled.field("Seed") == "`5000`" and rerolled.embeds[0].title == "Round 2"
    # Other emoji, the bot's own reaction and unknown messages are ignored.
    await cog.on_raw_reaction_add(reaction(fake, result.id, thread.id, OWNER, emoji="👍"))
    await cog.on_raw_reaction_add(reaction(fake, result.id, thread.id, BOT_ID))
    await cog.on_raw_reaction_add(reaction(fake, 1, thread.id, OWNER))
    assert len(core.planner.calls) == 1 and len(await core.repo.rounds(1)) == 2


async def test_a_refused_reroll_reaction_says_why_in_the_thread(discord_core):
    core, fake = discord_core
    cog, _ = await _imagine(core, fake)
    thread = fake.original.thread
    result = (await eventually(lambda: _result_in(fake, thread.id)))[0]
    await recorded(core, result.id)
    await cog.on_raw_reaction_add(reaction(fake, result.id, thread.id, OTHER))
    note = fake.in_channel(thread.id)[-1]
    assert note.content.startswith(f"<@{OTHER}> Only the person who started this scene")
    assert fake.messages[result.id].removed_reactions == [("🔄", OTHER)]


async def test_persistent_buttons_rebuild_from_their_custom_ids(discord_core):
    core, fake = discord_core
    await _imagine(core, fake, seed=3)
    thread = fake.original.thread
    result = (await eventually(lambda: _result_in(fake, thread.id)))[0]
    reroll_id, _, edit_id, layout_id = result.custom_ids

    inter = fake.interaction(OWNER, thread)
    await _button(LayoutButton, inter, layout_id)
    text = inter.response.send_message.await_args.args[0]
    assert text.startswith("```json") and '"a red apple"' in text
    assert inter.response.send_message.await_args.kwargs["ephemeral"] is True

    inter = fake.interaction(OWNER, thread)
    await _button(RerollButton, inter, reroll_id)
    assert "seed `5000`" in inter.followup.send.await_args.args[0]
    await eventually(lambda: len(_result_in(fake, thread.id)) == 2)

    inter = fake.interaction(OWNER, thread)
    await _button(UndoButton, inter, f"lmd:undo:{(await core.repo.scene(1)).head_round_id}")
    assert inter.followup.send.await_args.args[0] == "Back to round 1."
    back = fake.in_channel(thread.id)[-1]
    assert back.content == "Back to round 1" and back.field("Seed") == "`3`"
    assert back.files == ["round1-seed3-image.png", "round1-seed3-overlay.png"]

    inter = fake.interaction(OWNER, thread)
    await _button(EditButton, inter, edit_id)
    modal = inter.response.send_modal.await_args.args[0]
    assert isinstance(modal, EditModal)
    modal.instruction._value = "add a cat"
    submit = fake.interaction(OWNER, thread)
    await modal.on_submit(submit)
    plan = next(m for m in fake.in_channel(thread.id) if m.embeds and m.embeds[0].title == "Plan · round 3")
    assert plan.field("Changed") == "added: a cat"

    other = fake.interaction(OTHER, thread)
    await _button(EditButton, other, edit_id)
    other.response.send_modal.assert_not_awaited()
    assert "Only the person who started" in other.response.send_message.await_args.args[0]

    # Refused (here the planner cannot lay it out): the box's text is gone, so the answer quotes it.
    modal.instruction._value = "put a kite\nhigh above the cup"
    failed = fake.interaction(OWNER, thread)
    await modal.on_submit(failed)
    said = failed.followup.send.await_args
    assert said.args[0].startswith("I couldn't lay this out")
    assert said.args[0].endswith("Your text, to try again:\n> put a kite\n> high above the cup")
    assert said.kwargs["ephemeral"] is True
    modal.instruction._value = "kite\n" * 300  # quoted, it would pass Discord's 2000 characters
    failed = fake.interaction(OWNER, thread)
    await modal.on_submit(failed)
    said = failed.followup.send.await_args
    assert said.args[0].endswith("Your text is attached, to try again.")
    assert said.kwargs["file"].filename == "instruction.txt"


async def _gated(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    core, fake = await start_discord(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": 3}
    )
    return core, fake, gate


async def test_cancel_button_on_a_queued_job(tmp_path):
    core, fake, gate = await _gated(tmp_path)
    try:
        await _imagine(core, fake, prompt="first")
        await _imagine(core, fake, prompt="second")
        thread = fake.original.thread
        # Queued behind the first scene's job; the position is edited in place as the queue moves.
        status = await eventually(
            lambda: [
                m for m in fake.in_channel(thread.id) if m.content == "⏳ Round 1: queued, position 1 of 1."
            ]
        )
        (cancel_id,) = status[0].custom_ids
        inter = fake.interaction(OTHER, thread)
        await _button(CancelButton, inter, cancel_id)
        assert "Only who queued" in inter.followup.send.await_args.args[0]
        inter = fake.interaction(OWNER, thread)
        await _button(CancelButton, inter, cancel_id)
        assert inter.followup.send.await_args.args[0] == "Cancelled."
        job_id = int(cancel_id.rsplit(":", 1)[1])
        assert (await core.repo.job(job_id)).status == JobStatus.CANCELLED
        await eventually(lambda: fake.messages[status[0].id].content.startswith("❌ Round 1: cancelled"))
        assert fake.messages[status[0].id].custom_ids == []
        (gate / "go").touch()
    finally:
        await core.close()


async def test_a_deleted_or_locked_thread_cancels_the_scenes_jobs(tmp_path):
    core, fake, gate = await _gated(tmp_path)
    try:
        cog = _cog(core, fake)
        await _imagine(core, fake, prompt="first")
        first = fake.original.thread
        await _imagine(core, fake, prompt="second")
        second = fake.original.thread
        await eventually(lambda: fake.in_channel(second.id))
        del fake.channels[first.id]
        deleted = {"id": str(first.id), "type": 11, "guild_id": "100", "parent_id": "10"}
        await cog.on_raw_thread_delete(discord.RawThreadDeleteEvent(deleted))
        locked = {"archived": True, "locked": True}
        archived = {**deleted, "id": str(second.id), "thread_metadata": locked}
        await cog.on_raw_thread_update(discord.RawThreadUpdateEvent(archived))

        # A running job ends cancelled once its worker has stopped it (a message from the worker
        # process, later under load); a queued one at once.
        async def both_cancelled() -> bool:
            jobs = [await core.repo.job(job_id) for job_id in (1, 2)]
            return all(job.status == JobStatus.CANCELLED for job in jobs)

        await eventually_async(both_cancelled)
        assert await core.repo.count_active_jobs(OWNER) == 0
        (gate / "go").touch()
    finally:
        await core.close()


def test_dynamic_item_templates_are_unique_anchored_and_short():
    patterns = [cls.__discord_ui_compiled_template__.pattern for cls in DYNAMIC_ITEMS]
    assert len(set(patterns)) == len(patterns)
    for cls in DYNAMIC_ITEMS:
        item = cls(2**63 - 1, 4) if cls is PickButton else cls(2**63 - 1)
        assert len(item.custom_id) <= 100
        assert cls.__discord_ui_compiled_template__.fullmatch(item.custom_id)
        assert item.item.custom_id.startswith("lmd:")


async def test_imagine_inside_a_thread_points_to_a_text_channel(discord_core):
    core, fake = discord_core
    cog = _cog(core, fake)
    inter = fake.interaction(OWNER, fake.thread(123))
    await ImagineCog.imagine.callback(cog, inter, prompt="a cat", mode=None, seed=None, steps=None)
    assert "in a text channel" in inter.response.send_message.await_args.args[0]
    assert core.planner.calls == []
