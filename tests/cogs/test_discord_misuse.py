"""What demanding users do to the bot in Discord: buttons pressed twice, refusals that concern
one person, text that looks like markup, the bot addressed where it has no scene. The real bot
against the fake REST API (tests/cogs/world.py)."""

from __future__ import annotations

import asyncio
import logging
import re

from lmd_bot.testing import ScriptedPlanner, layout_of
from tests.cogs.conftest import eventually_async, recorded
from tests.cogs.world import (
    GUILD_ID,
    OTHER,
    OWNER,
    discord_world,
    eventually,
    field,
    first_result,
    imagine,
    results_in,
)
from tests.fakes.fake_discord import BOT_ID, DM, EPHEMERAL
from tests.jobs.renderers import spec


def _buttons(message) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


def _said(world, token: str) -> str:
    return " ".join(f.get("content") or "" for f in world.followups(token))


async def test_retry_pressed_twice_renders_the_round_again_once(tmp_path):
    """A double click on Retry (or a second press later) queued the same round with the same seed
    again: two identical renders, two of the user's queue slots, two results."""
    crash = spec("crash_once", folder=str(tmp_path))  # the first render kills its worker
    async with discord_world(tmp_path, renderer=crash, queue={"max_attempts": 1}) as world:
        token = await imagine(world, seed=8)
        thread_id = int(world.original(token)["thread"]["id"])
        [failure] = await eventually(
            lambda: [m for m in world.api.messages_in(thread_id) if "Retry" in m["content"]]
        )
        [retry] = [b for b in _buttons(failure) if b.startswith("lmd:retry:")]
        first = world.click(retry, OWNER, int(failure["id"]))
        second = world.click(retry, OWNER, int(failure["id"]))
        await world.settle()
        jobs = await world.core.repo.recent_jobs_of_user(OWNER)
        assert len(jobs) == 2, [(j.id, j.status) for j in jobs]  # the failed one and one retry
        said = sorted([_said(world, first), _said(world, second)])  # either press may come first
        assert said[0] == "Queued again (seed `8`)." and "again already" in said[1], said
        await eventually(lambda: results_in(world, thread_id))
        await world.settle()
        assert len(results_in(world, thread_id)) == 1


async def test_imagine_at_the_queue_cap_is_refused_privately_before_planning(tmp_path):
    """The cap's refusal concerns one person, like the ban list's and the rate limit's: it was a
    public "thinking…" reply turned into "You have 2 images in the queue already" for the whole
    channel, after a planner call."""
    gate = tmp_path / "gate"
    gate.mkdir()
    async with discord_world(tmp_path, renderer=spec("gated", folder=str(gate))) as world:
        for prompt in ("a red apple", "a blue cup"):
            await imagine(world, prompt)
        token = await imagine(world, "a green pear")
        (gate / "go").touch()
        answer = world.callback(token)
        assert answer["type"] == 4 and answer["data"]["flags"] == EPHEMERAL, answer
        assert "2 images in the queue already" in answer["data"]["content"]
        assert [prompt for _, _, prompt in world.core.planner.calls] == ["a red apple", "a blue cup"]


# A masked link, bold, a heading marker: what a caption (the planner copies the user's words)
# must not turn into when the bot shows it.
MARKUP = "a sign saying **[free nitro](https://evil.example)** __now__"
_MASKED_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(https?://")
_BOLD = re.compile(r"(?<!\\)\*\*|(?<!\\)__")


def _embed_text(message) -> str:
    parts = []
    for embed in message["embeds"]:
        parts += [embed.get("title") or "", embed.get("description") or ""]
        parts += [f["value"] for f in embed.get("fields", [])]
    return "\n".join(parts)


async def test_captions_are_shown_as_written_not_as_markdown(tmp_path):
    """A caption with a masked link was shown as a clickable "free nitro" in the bot's own plan
    and result embeds (and /info, /queue the prompts): the target hidden, the bot vouching for it."""
    layout = layout_of(
        [{"id": 1, "caption": MARKUP, "box": [16, 16, 200, 100]}],
        background="a wall [click](https://evil.example)",
        negative="**everything**",
    )
    planner = ScriptedPlanner(plans={MARKUP: layout})
    async with discord_world(tmp_path, planner=planner) as world:
        token, _, result = await first_result(world, MARKUP)
        info = world.slash("info", OWNER, world.text_id)
        await world.settle()
        [listed] = world.callback(info)["data"]["embeds"]
        for shown in (_embed_text(world.original(token)), _embed_text(result)):
            assert "free nitro" in shown and "evil.example" in shown
            assert not _MASKED_LINK.search(shown) and not _BOLD.search(shown), shown
        assert "free nitro" in listed["description"] and not _MASKED_LINK.search(listed["description"])


def test_a_long_queue_lists_whole_lines_of_prompts_as_written():
    """/queue's fields were cut at 1024 characters wherever that fell: inside a line, after an
    escaping backslash of a prompt shown as written."""
    from cogs._format import queue_embed
    from lmd_bot.services import QueueEntry, QueueView

    def entry(position: int) -> QueueEntry:
        prompt = "__a_b_c__ " * 6  # every character but the spaces escaped: twice as long
        return QueueEntry(
            position=position,
            job_id=position,
            user_id=7,
            same_server=True,
            prompt=prompt,
            round_number=1,
            steps=20,
            mode="lmd+",
        )

    view = QueueView(running=[entry(0)], waiting=[entry(i) for i in range(1, 41)], eta_per_job_s=None)
    embed = queue_embed(view)
    waiting = embed.fields[1].value
    assert len(waiting) <= 1024 and waiting.endswith("more")
    assert all(line.startswith("`") for line in waiting.splitlines()[:-1])
    assert "__" not in waiting.replace("\\_", "")


async def test_a_plan_of_long_marked_up_captions_fits_discord_s_embed_limits(tmp_path):
    """Escaped, the longest captions take twice the characters: the plan and the result must
    still be messages Discord accepts (description 4096, an embed 6000 in all)."""
    caption = ("a_b*" * 40)[:120]
    objects = [{"id": i, "caption": f"{caption}", "box": [i * 30, 16, 28, 28]} for i in range(1, 17)]
    layout = layout_of(objects, background="_" * 400, negative="*" * 400)
    planner = ScriptedPlanner(plans={"a crowd": layout})
    async with discord_world(tmp_path, planner=planner) as world:
        token, _, result = await first_result(world, "a crowd")
        plan = world.original(token)
        for message in (plan, result):
            [main, *_] = message["embeds"]
            assert len(main["description"]) <= 4096 and len(_embed_text(message)) <= 6000
            assert "more" in main["description"] or main["description"].count("\n") == 15


# --- the bot addressed where it has no scene ------------------------------------------------------


def _bot_replies(world, channel_id: int) -> list[dict]:
    return [m for m in world.api.messages_in(channel_id) if m["author"]["id"] == str(BOT_ID)]


async def test_an_instruction_to_the_bot_outside_a_scene_thread_is_answered(tmp_path):
    """ "@lmd-bot draw a red apple" in a channel, or in a thread that is no scene's, was met with
    silence: the bot addressed by name, and no answer at all."""
    async with discord_world(tmp_path) as world:
        world.say(OWNER, world.text_id, "draw a red apple on a table", mention_bot=True)
        await world.settle()
        [said] = _bot_replies(world, world.text_id)
        assert "/imagine" in said["content"] and said["mentions"] == []
        assert str(said["message_reference"]["message_id"]) in {
            str(m["id"]) for m in world.api.messages_in(world.text_id)
        }
        world.say(OWNER, world.text_id, "nice weather today")  # not addressed: left alone
        await world.settle()
        assert len(_bot_replies(world, world.text_id)) == 1
        assert not world.core.planner.calls


async def test_a_direct_message_to_the_bot_is_answered(tmp_path):
    """A DM ("draw me a cat") got no answer: the bot draws in servers, and says so."""
    async with discord_world(tmp_path) as world:
        dm = world.api.add_channel(None, "dm", type=DM)
        world.say(OWNER, dm, "draw me a cat")
        await world.settle()
        [said] = _bot_replies(world, dm)
        assert "/imagine" in said["content"] and "server" in said["content"]
        assert not world.core.planner.calls


# --- permissions taken away while a scene runs ----------------------------------------------------


async def test_a_result_the_bot_may_not_upload_still_arrives_and_names_the_permission(tmp_path, caplog):
    """An admin takes Attach Files from the bot while an image renders: the result's post was
    refused, the status stayed at "rendering…" for good, and its owner was never told."""
    gate = tmp_path / "gate"
    gate.mkdir()
    async with discord_world(tmp_path, renderer=spec("gated", folder=str(gate))) as world:
        token = await imagine(world, seed=9)
        thread_id = int(world.original(token)["thread"]["id"])
        await eventually(lambda: (gate / "started-9").exists())
        world.api.deny(world.text_id, attach_files=True)
        (gate / "go").touch()
        [result] = await eventually(
            lambda: [m for m in world.api.messages_in(thread_id) if "is ready" in m["content"]]
        )
        assert [u["id"] for u in result["mentions"]] == [str(OWNER)]
        assert "**Attach Files**" in result["content"] and not result["attachments"]
        assert any(b.startswith("lmd:reroll:") for b in _buttons(result))
        # The status shrinks to a line after the result is posted (a request later: under load,
        # not yet there when the result is).
        [status] = await eventually(
            lambda: [m for m in world.api.messages_in(thread_id) if m["content"].startswith("✅")]
        )
        assert not status["components"]  # no Cancel left on a finished job
        # 🔄 on it works: the message is linked to its round once its post returns
        assert await eventually_async(lambda: world.core.repo.message(int(result["id"])))
        told = await eventually(lambda: _bot_replies(world, world.text_id)[1:])  # the admins hear of it
        assert len(told) == 1, told
        [told] = told
        assert "**Attach Files**" in told["content"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_thread_discord_will_not_open_leaves_no_plan_behind(tmp_path):
    """The plan is posted, then its thread is refused (a busy server's 1000 active threads, or a
    permission): the plan stayed in the channel as if it would render, under "Something went
    wrong on my side"."""
    async with discord_world(tmp_path) as world:
        world.api.fail(
            "POST",
            r"/channels/\d+/messages/\d+/threads",
            400,
            160006,
            "Maximum number of active threads reached",
        )
        token = await imagine(world)
        answer = world.original(token)
        assert answer["embeds"] == [] and "thread" in answer["content"], answer
        assert "went wrong" not in answer["content"] + _said(world, token)
        world.api.fail("POST", r"/channels/\d+/messages/\d+/threads", 403, 50013, "Missing Permissions")
        token = await imagine(world)
        answer = world.original(token)
        assert answer["embeds"] == [] and "admin" in answer["content"] + _said(world, token), answer


async def test_pick_pressed_twice_continues_from_the_candidate_once(tmp_path):
    """A double click on Pick 2 made two rounds of the same candidate, each posted and pinging."""
    async with discord_world(tmp_path) as world:
        token = await imagine(world, seed=21, candidates=2)
        thread_id = int(world.original(token)["thread"]["id"])
        [grid] = await eventually(lambda: [m for m in world.api.messages_in(thread_id) if field(m, "Seeds")])
        await recorded(world.core, int(grid["id"]))
        [pick] = [b for b in _buttons(grid) if b.endswith(":2") and b.startswith("lmd:pick:")]
        first = world.click(pick, OWNER, int(grid["id"]))
        second = world.click(pick, OWNER, int(grid["id"]))
        await world.settle()
        said = sorted([_said(world, first), _said(world, second)])  # either press may come first
        assert said[0].startswith("Candidate 2 is picked already: it's round 2"), said
        assert said[1].startswith("Candidate 2 it is: round 2"), said
        await eventually(lambda: results_in(world, thread_id))
        await world.settle()
        assert len(results_in(world, thread_id)) == 1
        assert len(await world.core.repo.rounds(1)) == 2  # the grid's round and one pick


# --- coming back to a scene the next day ----------------------------------------------------------


async def test_the_edit_box_and_undo_work_in_a_thread_discord_archived_meanwhile(tmp_path, caplog):
    """A scene's thread archives itself after a day; its owner comes back, types a change in ✏️
    Edit, or presses ↩️ Undo: the bot's post in the archived thread was refused (50083), the new
    round's job cancelled, and the answer was "Something went wrong on my side"."""
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world)
        world.api.archive(thread_id)
        await world.settle()
        [edit] = [b for b in _buttons(result) if b.startswith("lmd:edit:")]
        token = world.submit(
            edit.replace("lmd:edit:", "lmd:instruct:"), OWNER, thread_id, {"instruction": "add a cat"}
        )
        await world.settle()
        assert "Done" in _said(world, token), _said(world, token)
        assert not world.api.channels[thread_id]["thread_metadata"]["archived"]
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        await recorded(world.core, int(results[1]["id"]))
        world.api.archive(thread_id)
        await world.settle()
        [undo] = [b for b in _buttons(results[1]) if b.startswith("lmd:undo:")]
        token = world.click(undo, OWNER, int(results[1]["id"]))
        await world.settle()
        assert "Back to round 1" in _said(world, token), _said(world, token)
        public = [m for m in world.api.messages_in(thread_id) if not m["flags"] & EPHEMERAL]
        assert public[-1]["content"] == "Back to round 1" and public[-1]["attachments"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_button_in_a_thread_a_moderator_locked_says_so(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        world.say(OWNER, thread_id, "add a cat")
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        await recorded(world.core, int(results[1]["id"]))
        world.api.archive(thread_id, locked=True)
        await world.settle()
        [undo] = [b for b in _buttons(results[1]) if b.startswith("lmd:undo:")]
        token = world.click(undo, OWNER, int(results[1]["id"]))
        await world.settle()
        assert "locked" in _said(world, token), _said(world, token)


# --- two people in one scene ----------------------------------------------------------------------


async def test_in_a_shared_scene_the_result_pings_who_asked_for_it(tmp_path):
    """The owner shares the scene; someone else asks for a change and waits: its result pinged
    the owner (who asked for nothing) and never the person who asked."""
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        world.slash("share", OWNER, thread_id)
        await world.settle()
        world.say(OTHER, thread_id, "add a cat")
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert [u["id"] for u in results[1]["mentions"]] == [str(OTHER)]
        assert results[1]["content"].startswith(f"<@{OTHER}>")


# --- a restart while people wait for a plan -------------------------------------------------------


async def test_plans_being_made_when_the_bot_stops_are_finished_and_rendered_after_the_restart(tmp_path):
    """Stopping the bot (a deploy, SIGTERM) while the planner worked on an /imagine and on an
    instruction: the /imagine stayed "thinking…" for good and the instruction got 👀 and nothing;
    both were lost. Now they finish first (new ones are told the bot is restarting), and their
    renders come after the restart."""
    from tests.fakes.fake_discord import FakeDiscordAPI

    planner = ScriptedPlanner()
    async with FakeDiscordAPI() as api:
        async with discord_world(tmp_path, api=api, planner=planner) as world:
            _, thread_id, _ = await first_result(world)
            planner.delay_s = 0.5  # the LLM thinks
            token = world.slash("imagine", OWNER, world.text_id, prompt="a green pear")
            world.say(OWNER, thread_id, "add a cat")
            await eventually(lambda: len(planner.calls) == 3)
            stopping = asyncio.create_task(world.bot.close())
            await asyncio.sleep(0.05)
            late = world.slash("imagine", OTHER, world.text_id, prompt="a red kite")
            await stopping
        assert "restarting" in world.callback(late)["data"]["content"]
        plan = api.messages[api.interactions[token]["original"]]
        assert plan["embeds"][0]["title"] == "Plan · round 1" and "thread" in plan
        new_thread = int(plan["thread"]["id"])
        assert any(
            m["embeds"] and m["embeds"][0]["title"] == "Plan · round 2" for m in api.messages_in(thread_id)
        )
        async with discord_world(tmp_path, api=api) as world:
            await eventually(lambda: results_in(world, new_thread) and len(results_in(world, thread_id)) == 2)


async def test_a_reroll_on_the_plan_of_a_scene_whose_thread_was_deleted_says_so(tmp_path):
    """The plan stays in the channel after its thread is deleted; a 🔄 on it rendered the round
    again for a thread that no longer exists: the GPU's time spent, and the user told nothing."""
    async with discord_world(tmp_path) as world:
        token, thread_id, _ = await first_result(world)
        world.api.delete_channel(thread_id)
        world.state.parse_thread_delete(
            {"id": str(thread_id), "guild_id": str(GUILD_ID), "parent_id": str(world.text_id), "type": 11}
        )
        await world.settle()
        world.react(OWNER, world.text_id, world.api.interactions[token]["original"])
        await world.settle()
        [said] = _bot_replies(world, world.text_id)[1:]
        assert said["content"].startswith(f"<@{OWNER}>") and "thread" in said["content"]
        assert len(await world.core.repo.recent_jobs_of_user(OWNER)) == 1  # nothing rendered again
