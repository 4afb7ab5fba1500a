"""The bot as Discord sees it: the real cogs, services and discord.py HTTP layer against the fake
REST API. Assertions are on the requests Discord receives (methods, paths, JSON, files) and on
the messages as Discord then holds them."""

from __future__ import annotations

import logging
import re

import discord

from tests.cogs.world import (
    GUILD_ID,
    OTHER,
    OWNER,
    PREVIEW,
    discord_world,
    eventually,
    field,
    first_result,
    images,
    imagine,
    results_in,
)
from tests.fakes.fake_discord import EPHEMERAL
from tests.jobs.renderers import spec

# --- the happy paths --------------------------------------------------------------------------


async def test_imagine_plans_opens_a_thread_and_posts_the_result(tmp_path):
    async with discord_world(tmp_path) as world:
        token, thread_id, result = await first_result(world, seed=31337)
        assert world.callback(token) == {"type": 5}  # deferred at once: "thinking…"
        plan = world.original(token)
        assert [a["filename"] for a in plan["attachments"]] == ["plan.png"]
        assert plan["embeds"][0]["title"] == "Plan · round 1" and "seed 31337" in field(plan, "Scene")
        thread = world.api.channels[thread_id]
        assert thread["name"] == "a red apple, a blue cup" and thread["parent_id"] == str(world.text_id)
        assert [a["filename"] for a in result["attachments"]] == [
            "round1-seed31337-image.png",
            "round1-seed31337-overlay.png",
        ]
        assert images(result) == [
            "attachment://round1-seed31337-image.png",
            "attachment://round1-seed31337-overlay.png",
        ]
        rid = (await world.core.repo.scene_by_thread(thread_id)).head_round_id
        buttons = [c["custom_id"] for row in result["components"] for c in row["components"]]
        assert buttons == [f"lmd:reroll:{rid}", f"lmd:undo:{rid}", f"lmd:edit:{rid}", f"lmd:layout:{rid}"]
        assert world.api.requests_to("PUT", f"/channels/{thread_id}/messages/{result['id']}/reactions/.+/@me")


async def test_an_instruction_in_the_thread_plans_round_2_and_renders_it(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        said = world.say(OWNER, thread_id, "move a blue cup right")
        await world.settle()
        assert world.api.requests_to("PUT", f"/channels/{thread_id}/messages/{said}/reactions/.+/@me")
        plans = [m for m in world.api.messages_in(thread_id) if m.get("message_reference")]
        assert plans and str(plans[0]["message_reference"]["message_id"]) == str(said)
        assert plans[0]["embeds"][0]["title"] == "Plan · round 2"
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert results[1]["embeds"][0]["title"] == "Round 2"


async def test_the_reroll_button_renders_again_with_a_new_seed(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world, seed=7)
        custom_id = result["components"][0]["components"][0]["custom_id"]
        token = world.click(custom_id, OWNER, int(result["id"]))
        await world.settle()
        assert world.callback(token) == {"type": 5, "data": {"flags": EPHEMERAL}}
        assert "5000" in world.original(token)["content"] or "5000" in str(world.followups(token))
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert field(results[1], "Seed") == "`5000`"


async def test_a_reroll_reaction_renders_again_and_the_reaction_is_removed(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world, seed=7)
        world.react(OWNER, thread_id, int(result["id"]))
        await world.settle()
        assert world.api.requests_to(
            "DELETE", f"/channels/{thread_id}/messages/{result['id']}/reactions/.+/{OWNER}"
        )
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert field(results[1], "Seed") == "`5000`"


# --- 1. flagged images stay hidden --------------------------------------------------------------


async def test_a_flagged_result_is_a_spoiler_attachment_and_its_embed_shows_no_image(tmp_path):
    flagging = PREVIEW.model_copy(update={"safety_checker": "tests.jobs.renderers:flagging_checker"})
    async with discord_world(tmp_path, renderer=flagging, guard={"safety_policy": "spoiler"}) as world:
        _, _, result = await first_result(world)
        names = [a["filename"] for a in result["attachments"]]
        assert len(names) == 2 and all(n.startswith("SPOILER_") for n in names)
        assert images(result) == []  # an embed would show the image unblurred
        assert "spoiler" in str(result["embeds"]).lower()


# --- 2. no prefix commands ----------------------------------------------------------------------


async def test_a_mention_style_instruction_logs_no_error(tmp_path, caplog):
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        with caplog.at_level(logging.INFO):
            world.say(OWNER, thread_id, "move a blue cup right", mention_bot=True)
            world.say(OWNER, world.text_id, "hello there", mention_bot=True)
            await world.settle()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert "CommandNotFound" not in caplog.text
        await eventually(lambda: len(results_in(world, thread_id)) == 2)


# --- 7. permissions ------------------------------------------------------------------------------


async def test_a_channel_the_bot_cannot_view_is_named(tmp_path):
    async with discord_world(tmp_path) as world:
        perms = discord.Permissions.all()
        perms.view_channel = False
        token = world.slash("imagine", OWNER, world.text_id, prompt="a red apple", app_permissions=perms)
        await world.settle()
        answer = world.callback(token)["data"]
        assert "**View Channel**" in answer["content"] and answer["flags"] == EPHEMERAL
        assert not world.core.planner.calls


async def test_a_refusal_with_every_permission_granted_still_says_something_useful(tmp_path):
    async with discord_world(tmp_path) as world:
        world.api.fail("POST", r"/channels/\d+/messages/\d+/threads", 403, 50001, "Missing Access")
        token = await imagine(world)
        said = [f.get("content") or "" for f in world.followups(token)] + [world.original(token)["content"]]
        text = " ".join(said)
        assert "Missing Access" in text or "access" in text.lower()
        assert not re.search(r"give me\s+here", text)


# --- 8. the smaller ones -------------------------------------------------------------------------


async def test_a_result_too_big_for_png_is_webp_and_the_embed_shows_the_webp(tmp_path):
    async with discord_world(tmp_path, renderer=spec("noisy")) as world:
        _, _, result = await first_result(world, seed=21)
        names = [a["filename"] for a in result["attachments"]]
        assert names[0] == "round1-seed21-image.webp" and len(names) == 2
        assert images(result) == [f"attachment://{n}" for n in names]


async def test_other_peoples_chat_in_a_scene_thread_is_left_alone_unless_they_address_the_bot(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        before = len(world.api.messages_in(thread_id))
        world.say(OTHER, thread_id, "nice picture")
        await world.settle()
        assert len(world.api.messages_in(thread_id)) == before + 1, world.api.messages_in(thread_id)[before:]
        world.say(OTHER, thread_id, "make it night", mention_bot=True)
        await world.settle()
        [hint] = world.api.messages_in(thread_id)[before + 2 :]
        assert f"<@{OWNER}>" in hint["content"] and hint["mentions"] == []


async def test_prompts_echoed_by_the_bot_ping_nobody(tmp_path):
    async with discord_world(tmp_path) as world:
        token = await imagine(world, prompt="a red apple, <@999> as a cat")
        plan = world.original(token)
        assert "<@999>" in plan["content"] and plan["mentions"] == []


async def test_the_settings_channels_field_fits_discord_s_limit(tmp_path):
    async with discord_world(tmp_path) as world:
        from lmd_bot.services import Actor, SettingsChange

        admin = Actor(user_id=3, guild_id=GUILD_ID, is_admin=True)
        for i in range(60):  # 60 channel mentions of 22 characters: ~1400
            await world.core.scenes.update_server_settings(admin, SettingsChange(allow_channel_id=10**18 + i))
        token = world.slash("settings", 3, world.text_id, admin=True)
        await world.settle()
        [answer] = world.followups(token)
        [embed] = answer["embeds"]
        channels = next(f["value"] for f in embed["fields"] if f["name"] == "Channels")
        assert len(channels) <= 1024 and "more" in channels


async def test_dismissed_edit_modals_do_not_pile_up(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world)
        edit = next(
            c["custom_id"]
            for c in result["components"][0]["components"]
            if c["custom_id"].startswith("lmd:edit")
        )
        for _ in range(3):
            token = world.click(edit, OWNER, int(result["id"]))
            await world.settle()
            assert world.callback(token)["type"] == 9  # the modal; the user closes it
        store = world.state._view_store
        await eventually(lambda: not store._modals, timeout=5)
        # The last one is sent after all: it is answered from its custom id.
        modal = world.api.interactions[token]["modal"]
        [box] = _inputs(modal["components"])
        sent = world.submit(modal["custom_id"], OWNER, thread_id, {box["custom_id"]: "move a blue cup right"})
        await world.settle()
        assert "Done" in str(world.followups(sent))
        await eventually(lambda: len(results_in(world, thread_id)) == 2)


# --- Discord's other answers ----------------------------------------------------------------------


async def test_a_rate_limited_post_is_waited_out_and_the_result_still_arrives(tmp_path):
    async with discord_world(tmp_path) as world:
        world.api.rate_limit("POST", r"/channels/\d+/messages", 0.05, times=2)
        _, thread_id, result = await first_result(world, seed=3)
        assert field(result, "Seed") == "`3`"
        limited = [
            r for r in world.api.requests_to("POST", rf"/channels/{thread_id}/messages") if r.status == 429
        ]
        assert len(limited) == 2


def _inputs(components) -> list[dict]:
    """The text inputs of a modal as sent (in action rows or labels)."""
    found = []
    for c in components:
        if c.get("type") == 4:
            found.append(c)
        found += _inputs(c.get("components", []) + ([c["component"]] if "component" in c else []))
    return found


async def test_an_edit_layout_box_sent_long_after_it_opened_still_makes_the_round(tmp_path):
    """People type as long as they like, and Discord keeps the box open; the bot forgot a box
    after 15 minutes and left its submit unanswered. Now nothing is kept: the box carries all."""
    import asyncio

    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world)
        layout = next(
            c["custom_id"]
            for c in result["components"][0]["components"]
            if c["custom_id"].startswith("lmd:layout")
        )
        shown = world.click(layout, OWNER, int(result["id"]))
        await world.settle()
        message = world.original(shown)
        opened = world.click(
            message["components"][0]["components"][0]["custom_id"], OWNER, int(message["id"])
        )
        await world.settle()
        modal = world.api.interactions[opened]["modal"]
        [box] = _inputs(modal["components"])
        assert not world.state._view_store._modals  # nothing to forget
        await asyncio.sleep(0.5)  # typing...
        edited = box["value"].replace('"a blue cup"', '"a green cup"')
        token = world.submit(modal["custom_id"], OWNER, thread_id, {box["custom_id"]: edited})
        await world.settle()
        assert world.callback(token) == {"type": 5, "data": {"flags": EPHEMERAL}}
        assert "Done" in str(world.followups(token))
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert (
            results[1]["embeds"][0]["title"] == "Round 2"
            and "a green cup" in results[1]["embeds"][0]["description"]
        )
