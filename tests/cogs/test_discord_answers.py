"""What the bot owes the person who asked, whatever goes wrong on its side or on Discord's: a
short answer in words (never silence, never a traceback), the operator a logged traceback. The
real bot against the fake REST API (tests/cogs/world.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3

from tests.cogs.world import (
    GUILD_ID,
    OTHER,
    OWNER,
    discord_world,
    eventually,
    first_result,
    imagine,
    results_in,
)
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_discord import BOT_ID, EPHEMERAL
from tests.jobs.renderers import spec
from tests.planner.conftest import API_KEY, anthropic_backend, make_planner


def _buttons(message) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


def _bot_posts(world, channel_id: int) -> list[dict]:
    return [m for m in world.api.messages_in(channel_id) if m["author"]["id"] == str(BOT_ID)]


async def test_a_layout_file_that_cannot_be_downloaded_gets_an_answer(tmp_path, caplog):
    """A layout file posted in the thread whose download fails (Discord's CDN answering 503): the
    user's message got 👀 and nothing else, the error was only in discord.py's own log; then the
    catch-all's "Something went wrong on my side", for what posting the file again fixes."""
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        before = len(_bot_posts(world, thread_id))
        world.api.fail("GET", r"/cdn/\d+/.*", 503, 0, "Service Unavailable")
        layout = world.api.add_file("layout.json", b'{"objects": []}')
        mid = world.say(OWNER, thread_id, "", attachments=[layout])
        await world.settle()
        [said] = _bot_posts(world, thread_id)[before:]
        assert said["content"] == (
            "I couldn't download that file from Discord just now; post it again in a moment."
        ), said["content"]
        assert said["mentions"] == []
        assert str(said["message_reference"]["message_id"]) == str(mid)
        [logged] = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "cogs.imagine"]
        assert "503" in logged.getMessage()
        assert len(await world.core.repo.rounds(1)) == 1  # nothing half-done


# --- the planner's words ---------------------------------------------------------------------------

# A prompt-injected planner answer: a masked link, bold, underline, a user's mention.
INJECTED = "I draw scenes. **[free nitro](https://evil.example)** <@2> __now__"
_MASKED_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(https?://")
_BOLD = re.compile(r"(?<!\\)\*\*|(?<!\\)__")


def _shown_as_written(message: dict) -> None:
    content = message["content"]
    assert "free nitro" in content and "evil.example" in content, content
    assert not _MASKED_LINK.search(content) and not _BOLD.search(content), content
    assert message["mentions"] == [], message["mentions"]


async def test_the_planner_s_replies_are_shown_as_written_and_ping_nobody(tmp_path):
    """A question ("what can you do?") gets the planner's short answer, posted as the bot's own
    message: a prompt-injected answer showed a clickable "free nitro" in the bot's name, and
    pinged whoever it named."""
    async with FakeAnthropic(api_key=API_KEY) as claude:
        planner = make_planner(anthropic_backend(claude.base_url))
        async with discord_world(tmp_path, planner=planner) as world:
            claude.push_reply(INJECTED)
            asked = world.slash("imagine", OWNER, world.text_id, prompt="what can you do?")
            await world.settle()
            _shown_as_written(world.original(asked))

            claude.push_layout([("a red apple", (40, 300, 90, 90)), ("a blue cup", (300, 300, 90, 90))])
            _, thread_id, result = await first_result(world)
            claude.push_reply(INJECTED)
            world.say(OWNER, thread_id, "what can you do?")
            await world.settle()
            _shown_as_written(_bot_posts(world, thread_id)[-1])

            claude.push_reply(INJECTED)
            [edit] = [b for b in _buttons(result) if b.startswith("lmd:edit:")]
            boxed = world.submit(
                edit.replace("lmd:edit:", "lmd:instruct:"), OWNER, thread_id, {"instruction": "what now?"}
            )
            await world.settle()
            # The box's private answer (its "thinking…" become the answer) ...
            answer = world.api.messages[world.api.interactions[boxed]["original"]]
            assert answer["flags"] & EPHEMERAL
            _shown_as_written(answer)  # ... shown as written too


def test_the_bot_s_own_replies_keep_their_formatting():
    from cogs._format import reply_content
    from lmd_bot.services import ReplyView, Voice

    said = "Use `/share` to let **everyone** edit."
    assert reply_content(ReplyView(text=said, by=Voice.BOT)) == said
    assert (
        reply_content(ReplyView(text=said, by=Voice.PLANNER))
        == "Use \\`/share\\` to let \\*\\*everyone\\*\\* edit."
    )


async def test_a_layout_whose_caption_holds_a_code_fence_is_not_shown_as_markdown(tmp_path):
    """🗺️ Layout shows the layout as JSON in a code block: a caption holding ``` ended the block,
    and the rest of the planner's JSON (a masked link in a caption) rendered as the bot's markdown."""
    from lmd_bot.testing import ScriptedPlanner, layout_of

    caption = "a sign ``` [free nitro](https://evil.example)"
    layout = layout_of([{"id": 1, "caption": caption, "box": [16, 16, 200, 100]}])
    async with discord_world(tmp_path, planner=ScriptedPlanner(plans={"a sign": layout})) as world:
        _, _, result = await first_result(world, "a sign")
        [button] = [b for b in _buttons(result) if b.startswith("lmd:layout:")]
        token = world.click(button, OWNER, int(result["id"]))
        await world.settle()
        shown = world.original(token)
        assert "```" not in shown["content"] and "free nitro" not in shown["content"], shown["content"]
        [sent] = [r for r in world.api.requests if r.files and token in r.path]  # the JSON as a file
        assert caption.encode() in sent.files[0].data


# --- Discord's 3 seconds ---------------------------------------------------------------------------


async def _pressed_while_the_database_is_slow(world, tmp_path, press) -> str:
    """``press()`` (a click or a slash command: its token) while another writer holds the
    database's write lock for 1.5 s, Discord's answer window at 0.5 s; the token, once Discord
    accepted its acknowledgement in time, privately."""
    world.api.interaction_window_s = 0.5
    other_writer = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")  # the database's write lock, held elsewhere
    try:
        token = press()
        await asyncio.sleep(1.5)
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()
    await world.settle()
    assert world.callback(token)["data"]["flags"] & EPHEMERAL
    return token


async def test_cancel_is_acknowledged_at_once_even_when_the_database_is_slow(tmp_path):
    """❌ Cancel answered Discord only after its database work: with the database slow (another
    writer holding it), the answer came after Discord's 3 seconds and the user saw "This
    interaction failed", though the job was cancelled. The fake's window is 0.5 s here, the
    database held for 1.5 s."""
    gate = tmp_path / "gate"
    gate.mkdir()
    async with discord_world(tmp_path, renderer=spec("gated", folder=str(gate))) as world:
        await imagine(world, "a red apple")  # runs, held at the gate
        token = await imagine(world, "a blue cup")  # waits in the queue
        thread_id = int(world.original(token)["thread"]["id"])
        [status] = await eventually(
            lambda: [m for m in world.api.messages_in(thread_id) if m["content"].startswith("⏳")]
        )
        [cancel] = [b for b in _buttons(status) if b.startswith("lmd:cancel:")]
        pressed = await _pressed_while_the_database_is_slow(
            world, tmp_path, lambda: world.click(cancel, OWNER, int(status["id"]))
        )
        said = " ".join(f.get("content") or "" for f in world.followups(pressed))
        assert said == "Cancelled.", said
        (gate / "go").touch()


# --- an instruction deleted before its answer ------------------------------------------------------


async def test_an_instruction_deleted_while_planned_still_gets_its_plan_and_result(tmp_path):
    """A user deletes their instruction while the planner works on it (a typo, second thoughts):
    Discord refused the plan's reply to the deleted message (50035), after the round was written
    and the scene moved to it; the round's job was dropped and the user saw nothing at all."""
    from lmd_bot.testing import ScriptedPlanner

    planner = ScriptedPlanner()
    async with discord_world(tmp_path, planner=planner) as world:
        _, thread_id, _ = await first_result(world)
        planner.delay_s = 0.3  # the LLM thinks
        mid = world.say(OWNER, thread_id, "add a cat")
        await eventually(lambda: len(planner.calls) == 2)
        world.api.delete_message(mid)
        await world.settle()
        [plan] = [
            m for m in _bot_posts(world, thread_id) if m["embeds"] and "round 2" in m["embeds"][0]["title"]
        ]
        assert "message_reference" not in plan  # in the thread, a reply to nothing
        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id)
        )
        assert results[1]["content"].startswith(f"<@{OWNER}> round 2 is ready")

        planner.delay_s = 0.3  # a question deleted as well: its answer is still posted
        mid = world.say(OWNER, thread_id, "what can you do?")
        await eventually(lambda: len(planner.calls) == 3)
        world.api.delete_message(mid)
        await world.settle()
        assert _bot_posts(world, thread_id)[-1]["content"] == "I can add, remove and move objects."


async def test_a_settings_change_is_acknowledged_at_once_even_when_the_database_is_slow(tmp_path):
    """/settings steps:12 wrote the change, then answered: with the database slow, after Discord's
    3 seconds ("This interaction failed", though the change was saved)."""
    async with discord_world(tmp_path) as world:
        token = await _pressed_while_the_database_is_slow(
            world, tmp_path, lambda: world.slash("settings", OWNER, world.text_id, admin=True, steps=12)
        )
        [shown] = world.followups(token)
        assert shown["flags"] & EPHEMERAL and "`12`" in str(shown["embeds"]), shown
        assert (await world.core.repo.server_settings(GUILD_ID)).steps == 12


async def test_a_share_is_acknowledged_at_once_then_announced_in_the_thread(tmp_path):
    """/share wrote the setting, then answered: with the database slow, after Discord's 3 seconds
    ("This interaction failed", though the scene was shared). It acknowledges privately at once;
    the thread is told who may edit now; a refusal stays private."""
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        token = await _pressed_while_the_database_is_slow(
            world, tmp_path, lambda: world.slash("share", OWNER, thread_id)
        )
        assert [f.get("content") for f in world.followups(token)] == ["Done."]
        [announced] = [m for m in world.api.messages_in(thread_id) if "can now edit" in (m["content"] or "")]
        assert announced["content"].startswith("Everyone here can now edit this scene")
        assert not announced["mentions"]
        assert (await world.core.repo.scene_by_thread(thread_id)).allow_everyone

        refused = world.slash("share", OTHER, thread_id, everyone=False)
        await world.settle()
        said = " ".join(f.get("content") or "" for f in world.followups(refused))
        callback = world.callback(refused)
        assert callback["data"]["flags"] & EPHEMERAL
        assert "Only the person who started this scene" in said + str(callback["data"].get("content"))
        assert (await world.core.repo.scene_by_thread(thread_id)).allow_everyone
