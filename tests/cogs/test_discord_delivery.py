"""Delivering into Discord as it behaves: results that notify, archived threads, channels where
no thread can open (the REST-level harness of test_discord_rest)."""

from __future__ import annotations

import logging

import pytest

from tests.cogs.world import OTHER, OWNER, discord_world, eventually, field, first_result, imagine, results_in
from tests.fakes.fake_discord import DM, EPHEMERAL, FORUM, STAGE, VOICE
from tests.jobs.renderers import spec

# --- 4. results notify ---------------------------------------------------------------------------


async def test_the_result_is_a_new_message_that_pings_its_owner_only(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world)
        assert world.api.requests_to("POST", f"/channels/{thread_id}/messages")[-1].json["embeds"]
        assert [u["id"] for u in result["mentions"]] == [str(OWNER)]
        assert [str(u) for u in result["allowed_mentions"]["users"]] == [str(OWNER)]
        assert "users" not in result["allowed_mentions"].get("parse", [])
        # The status message went first; it shrinks to one line without buttons or pictures, and
        # the result is the newest message of the thread.
        messages = world.api.messages_in(thread_id)
        assert messages[-1]["id"] == result["id"]
        [status] = messages[:-1]
        await eventually(lambda: status["content"].startswith("✅"))
        assert "\n" not in status["content"] and not status["attachments"] and not status["components"]
        assert status["mentions"] == []


# --- 3. archived threads -------------------------------------------------------------------------


async def _gated_world(tmp_path, **kwargs):
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    return gate, discord_world(tmp_path, renderer=spec("gated", folder=str(gate)), **kwargs)


async def test_a_result_for_an_archived_thread_unarchives_it_and_arrives(tmp_path):
    gate, world_cm = await _gated_world(tmp_path)
    async with world_cm as world:
        token = await imagine(world, seed=11)
        thread_id = int(world.original(token)["thread"]["id"])
        await eventually(lambda: (gate / "started-11").exists())
        world.api.archive(thread_id)  # Discord archived it (inactivity, or someone)
        await world.settle()
        (gate / "go").touch()
        [result] = await eventually(lambda: results_in(world, thread_id))
        assert world.api.requests_to("PATCH", f"/channels/{thread_id}")[0].json == {"archived": False}
        assert not world.api.channels[thread_id]["thread_metadata"]["archived"]
        assert field(result, "Seed") == "`11`"


async def test_a_result_posted_again_after_reopening_its_thread_keeps_its_images(tmp_path):
    """The result's post is the write that finds the thread archived (50083): the thread is
    reopened and the post made again, with the same files, which the first try had read to
    their end. The images went out a second time as 0-byte uploads."""
    gate, world_cm = await _gated_world(tmp_path)
    async with world_cm as world:
        token = await imagine(world, seed=15)
        thread_id = int(world.original(token)["thread"]["id"])
        await eventually(lambda: (gate / "started-15").exists())
        await eventually(lambda: world.api.messages_in(thread_id))  # the status is posted
        world.api.fail("POST", f"/channels/{thread_id}/messages", 400, 50083, "Thread is archived")
        (gate / "go").touch()
        [result] = await eventually(lambda: results_in(world, thread_id))
        refused, posted = [
            r for r in world.api.requests_to("POST", f"/channels/{thread_id}/messages") if r.files
        ]
        assert refused.status == 400 and posted.status == 200
        assert [len(f.data) for f in posted.files] == [len(f.data) for f in refused.files]
        assert all(a["size"] > 0 for a in result["attachments"])


@pytest.mark.parametrize("event_seen", [True, False])
async def test_a_locked_archived_thread_is_a_gone_destination(tmp_path, caplog, event_seen):
    gate, world_cm = await _gated_world(tmp_path)
    caplog.set_level(logging.INFO)
    async with world_cm as world:
        token = await imagine(world, seed=12)
        thread_id = int(world.original(token)["thread"]["id"])
        await eventually(lambda: (gate / "started-12").exists())
        world.api.archive(thread_id, locked=True, tell_gateway=event_seen)  # a moderator closed it
        await world.settle()
        (gate / "go").touch()
        if event_seen:  # the scene's jobs end at once
            await eventually(lambda: "cancelled (the thread was closed)" in caplog.text)
        else:  # the result finds it locked: reopening it is refused, the scene ends
            await eventually(lambda: "thread is gone" in caplog.text)
            [reopen] = world.api.requests_to("PATCH", f"/channels/{thread_id}")
            assert reopen.status == 403
        assert not results_in(world, thread_id)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_job_resumed_after_a_restart_delivers_to_its_since_archived_thread(tmp_path):
    from tests.fakes.fake_discord import FakeDiscordAPI

    gate = tmp_path / "gate"
    gate.mkdir()
    gated = spec("gated", folder=str(gate))
    async with FakeDiscordAPI() as api:
        async with discord_world(tmp_path, renderer=gated, api=api) as world:
            token = await imagine(world, seed=13)
            thread_id = int(world.original(token)["thread"]["id"])
            await eventually(lambda: (gate / "started-13").exists())
        # The bot is down; meanwhile Discord archives the thread.
        api.archive(thread_id)
        (gate / "go").touch()
        async with discord_world(tmp_path, renderer=gated, api=api) as world:
            [result] = await eventually(lambda: results_in(world, thread_id))
            assert field(result, "Seed") == "`13`"
            assert [u["id"] for u in result["mentions"]] == [str(OWNER)]


# --- 6. channels without threads ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [VOICE, STAGE, FORUM])
async def test_imagine_where_no_thread_can_open_answers_at_once_and_plans_nothing(tmp_path, kind):
    async with discord_world(tmp_path) as world:
        channel = world.add_channel("lounge", type=kind)
        token = world.slash("imagine", OWNER, channel, prompt="a red apple")
        await world.settle()
        answer = world.callback(token)
        assert answer["type"] == 4 and answer["data"]["flags"] == EPHEMERAL
        assert "text channel" in answer["data"]["content"]
        assert not world.api.threads() and not world.core.planner.calls


async def test_imagine_in_a_dm_answers_at_once(tmp_path):
    async with discord_world(tmp_path) as world:
        dm = world.api.add_channel(None, "dm", type=DM)
        token = world.slash("imagine", OWNER, dm, prompt="a red apple")
        await world.settle()
        answer = world.callback(token)
        assert answer["type"] == 4 and "server" in answer["data"]["content"]
        assert not world.core.planner.calls


async def test_a_thread_deleted_while_rendering_ends_the_scene_without_errors(tmp_path, caplog):
    gate, world_cm = await _gated_world(tmp_path)
    async with world_cm as world:
        token = await imagine(world, seed=14)
        thread_id = int(world.original(token)["thread"]["id"])
        await eventually(lambda: (gate / "started-14").exists())
        world.api.delete_channel(thread_id)  # and the bot missed the gateway event
        (gate / "go").touch()
        with caplog.at_level(logging.INFO):
            await eventually(lambda: "thread is gone" in caplog.text)
        assert any(
            r.status == 404 for r in world.api.requests if r.path.startswith(f"/channels/{thread_id}/")
        )
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --- failures notify, refusals reach archived threads ----------------------------------------------


async def test_a_failed_render_pings_its_owner_in_a_new_message_saying_what_to_do(tmp_path):
    async with discord_world(tmp_path, renderer=spec("broken")) as world:  # the GPU worker can't start
        token = await imagine(world)
        thread_id = int(world.original(token)["thread"]["id"])

        def failure():
            return [m for m in world.api.messages_in(thread_id) if "⚠️" in m["content"] and m["mentions"]]

        [said] = await eventually(failure)
        assert [u["id"] for u in said["mentions"]] == [str(OWNER)]
        assert [str(u) for u in said["allowed_mentions"]["users"]] == [str(OWNER)]
        assert "renderer could not start" in said["content"] and "Retry" in said["content"]
        assert said["components"][0]["components"][0]["custom_id"].startswith("lmd:retry:")
        # The status message went first and shrinks to one line; the failure is the newest message.
        [status, last] = world.api.messages_in(thread_id)
        assert last["id"] == said["id"]
        await eventually(lambda: status["content"].startswith("⚠️") and "see below" in status["content"])
        assert not status["components"] and status["mentions"] == []


async def test_a_refused_reroll_reaction_in_an_archived_thread_reopens_it_to_say_why(tmp_path, caplog):
    async with discord_world(tmp_path) as world:
        _, thread_id, result = await first_result(world)
        world.api.archive(thread_id)  # Discord archived it; someone still reacts 🔄 on the result
        await world.settle()
        with caplog.at_level(logging.INFO):
            world.react(OTHER, thread_id, int(result["id"]))  # not the scene's editor: refused
            await world.settle()
        [said] = [m for m in world.api.messages_in(thread_id) if m["content"].startswith(f"<@{OTHER}>")]
        assert "Only the person who started" in said["content"]
        assert not world.api.channels[thread_id]["thread_metadata"]["archived"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
