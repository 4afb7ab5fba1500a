"""What the bot owes the person who asked, whatever goes wrong on its side or on Discord's: a
short answer in words (never silence, never a traceback), the operator a logged traceback. The
real bot against the fake REST API (tests/cogs/world.py)."""

from __future__ import annotations

import logging

from tests.cogs.world import OWNER, discord_world, first_result
from tests.fakes.fake_discord import BOT_ID


def _bot_posts(world, channel_id: int) -> list[dict]:
    return [m for m in world.api.messages_in(channel_id) if m["author"]["id"] == str(BOT_ID)]


async def test_a_layout_file_that_cannot_be_downloaded_gets_an_answer(tmp_path, caplog):
    """A layout file posted in the thread whose download fails (Discord's CDN answering 503): the
    user's message got 👀 and nothing else, the error was only in discord.py's own log."""
    async with discord_world(tmp_path) as world:
        _, thread_id, _ = await first_result(world)
        before = len(_bot_posts(world, thread_id))
        world.api.fail("GET", r"/cdn/\d+/.*", 503, 0, "Service Unavailable")
        layout = world.api.add_file("layout.json", b'{"objects": []}')
        mid = world.say(OWNER, thread_id, "", attachments=[layout])
        await world.settle()
        [said] = _bot_posts(world, thread_id)[before:]
        assert said["content"].startswith("Something went wrong on my side"), said["content"]
        assert "Traceback" not in said["content"] and said["mentions"] == []
        assert str(said["message_reference"]["message_id"]) == str(mid)
        [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert logged.exc_info is not None and "503" in str(logged.exc_info[1])
        assert len(await world.core.repo.rounds(1)) == 1  # nothing half-done
