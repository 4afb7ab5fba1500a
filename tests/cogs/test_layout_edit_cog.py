"""🗺️ Layout → 📝 Edit layout (a modal with the layout), and a layout file posted in the thread:
the cogs only present; the scene service reads the layout (no planner call)."""

from __future__ import annotations

import json
import re
from unittest.mock import AsyncMock, MagicMock

import discord

from cogs._views import EditLayoutButton, EditLayoutModal, LayoutButton
from cogs.imagine import ImagineCog
from lmd_bot.services import Actor
from lmd_bot.testing import RecordingNotifier
from tests.cogs.conftest import eventually, start_discord

OWNER, OTHER = 1, 2


async def _scene(core, fake):
    cog = ImagineCog(fake.bot, core.scenes, archive_minutes=1440, content_intent=True)
    await ImagineCog.imagine.callback(
        cog, fake.interaction(OWNER), prompt="a red apple, a blue cup", mode=None, seed=9, steps=None
    )
    thread = fake.original.thread
    results = await eventually(lambda: [m for m in fake.in_channel(thread.id) if m.field("Seed")])
    return cog, thread, results[0]


async def _press(cls, inter, custom_id):
    match = re.fullmatch(cls.__discord_ui_compiled_template__, custom_id)
    await (await cls.from_custom_id(inter, discord.ui.Button(custom_id=custom_id), match)).callback(inter)


def _plans(fake, thread):
    return [m for m in fake.in_channel(thread.id) if m.embeds and m.embeds[0].title.startswith("Plan")]


async def test_the_layout_button_offers_editors_an_edit_box_that_makes_a_round(discord_core):
    core, fake = discord_core
    _, thread, result = await _scene(core, fake)
    layout_id = result.custom_ids[3]

    other = fake.interaction(OTHER, thread)
    await _press(LayoutButton, other, layout_id)
    assert "view" not in other.response.send_message.await_args.kwargs  # not an editor: read only

    owner = fake.interaction(OWNER, thread)
    await _press(LayoutButton, owner, layout_id)
    shown = owner.response.send_message.await_args
    assert shown.args[0].startswith("```json") and shown.kwargs["ephemeral"] is True
    (edit_id,) = [item.custom_id for item in shown.kwargs["view"].children]

    denied = fake.interaction(OTHER, thread)
    await _press(EditLayoutButton, denied, edit_id)
    denied.response.send_modal.assert_not_awaited()
    assert "Only the person who started" in denied.response.send_message.await_args.args[0]

    owner = fake.interaction(OWNER, thread)
    await _press(EditLayoutButton, owner, edit_id)
    modal = owner.response.send_modal.await_args.args[0]
    assert isinstance(modal, EditLayoutModal) and '"a blue cup"' in modal.layout.default
    modal.layout._value = modal.layout.default.replace('"a blue cup"', '"a green cup"').replace(
        "[136, 200, 100, 100]", "[136, 200, 0, 100]"
    )
    submit = fake.interaction(OWNER, thread)
    await modal.on_submit(submit)
    plan = _plans(fake, thread)[-1]
    assert plan.embeds[0].title == "Plan · round 2"
    assert "no area" in str(plan.embeds[0].to_dict())  # the repair notes are shown with the plan
    assert submit.followup.send.await_args.args[0] == "Done: see the thread."
    assert len(core.planner.calls) == 1  # no LLM call
    await eventually(lambda: len([m for m in fake.in_channel(thread.id) if m.field("Seed")]) == 2)


async def _submit_refused(fake, thread, text: str):
    """The owner sends ``text`` in round 1's edit box; the bot's private answer (its call)."""
    modal = EditLayoutModal(1, 1, "")
    modal.layout._value = text
    submit = fake.interaction(OWNER, thread)
    await modal.on_submit(submit)
    return submit.followup.send.await_args


async def test_a_bad_edit_hands_the_text_back_and_changes_nothing(discord_core):
    core, fake = discord_core
    _, thread, _ = await _scene(core, fake)
    said = await _submit_refused(fake, thread, '{"objects": [{"caption": "a cat", "box": [1, 2')
    assert said.args[0].startswith("That layout isn't valid: the JSON is malformed")
    assert said.kwargs["file"].filename == "layout.txt" and said.kwargs["ephemeral"] is True
    assert len(await core.repo.rounds(1)) == 1


async def test_an_edit_refused_for_another_reason_hands_the_text_back_too(tmp_path):
    """A box's text is gone once it closes, whatever refuses it: here the ban list."""
    core, fake = await start_discord(tmp_path, guard={"banned_words": ["dragon"]})
    try:
        _, thread, _ = await _scene(core, fake)
        banned = (await core.scenes.layout_json(1)).replace("a blue cup", "a red dragon")
        said = await _submit_refused(fake, thread, banned)
        assert said.args[0].startswith("That prompt isn't allowed here")
        assert said.kwargs["file"].filename == "layout.txt" and said.kwargs["ephemeral"] is True
        assert len(await core.repo.rounds(1)) == 1
    finally:
        await core.close()


async def test_a_layout_too_long_for_the_edit_box_says_to_post_it_as_a_file(tmp_path):
    """Discord refuses a box whose text is longer than it holds: no box, but how to edit it."""
    core, fake = await start_discord(tmp_path, layout={"max_prompt_chars": 2000})
    try:
        _, thread, _ = await _scene(core, fake)
        data = json.loads(await core.scenes.layout_json(1))
        data.update(background="a very long meadow " * 105, negative="people, " * 240)
        actor = Actor(user_id=OWNER, guild_id=thread.guild.id, channel_id=thread.id)
        edited = await core.scenes.edit_layout(actor, 1, json.dumps(data), RecordingNotifier())
        owner = fake.interaction(OWNER, thread)
        await _press(EditLayoutButton, owner, f"lmd:editlayout:{edited.round.id}")
        owner.response.send_modal.assert_not_awaited()
        said = owner.response.send_message.await_args
        assert "too long for the edit box" in said.args[0] and said.kwargs["ephemeral"] is True
    finally:
        await core.close()


def _with_file(message, name: str, data: bytes):
    attachment = MagicMock(spec=discord.Attachment)
    attachment.filename = name
    attachment.size = len(data)
    attachment.read = AsyncMock(return_value=data)
    message.attachments = [attachment]
    return message


async def test_a_layout_file_posted_in_the_thread_becomes_the_next_round(discord_core):
    core, fake = discord_core
    cog, thread, _ = await _scene(core, fake)
    text = (
        "[('a red apple', [16, 200, 100, 100]), ('a cat', [300, 40, 120, 120])]\nBackground prompt: a meadow"
    )
    await cog.on_message(_with_file(fake.message(OWNER, thread, ""), "scene.txt", text.encode()))
    plan = _plans(fake, thread)[-1]
    assert (
        plan.embeds[0].title == "Plan · round 2"
        and plan.field("Changed") == "added: a cat; removed: a blue cup; background: a meadow"
    )
    assert len(core.planner.calls) == 1
    # Not a layout: the reply says why, nothing changes.
    bad = _with_file(fake.message(OWNER, thread, ""), "notes.json", b"\xff\xfe binary")
    await cog.on_message(bad)
    assert "binary data" in fake.in_channel(thread.id)[-1].content
    assert len(await core.repo.rounds(1)) == 2
    # Too big to be a layout: refused without being downloaded.
    huge = _with_file(fake.message(OWNER, thread, ""), "big.json", b"{}")
    huge.attachments[0].size = 10_000_000
    await cog.on_message(huge)
    assert "at most 65,536" in fake.in_channel(thread.id)[-1].content
    huge.attachments[0].read.assert_not_awaited()
