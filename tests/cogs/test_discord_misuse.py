"""What demanding users do to the bot in Discord: buttons pressed twice, refusals that concern
one person, text that looks like markup, the bot addressed where it has no scene. The real bot
against the fake REST API (tests/cogs/world.py)."""

from __future__ import annotations

from tests.cogs.world import OWNER, discord_world, eventually, imagine, results_in
from tests.fakes.fake_discord import EPHEMERAL
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
        assert "Queued again (seed `8`)" in _said(world, first)
        assert "already" in _said(world, second)
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
