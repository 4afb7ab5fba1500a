"""Grids of candidates in Discord: ``/imagine candidates:4`` posts one numbered grid with Pick
buttons, Pick 3 continues the scene from candidate 3's seed, 🔄 on the grid rerolls all four, and
a pick by someone who may not edit the scene says why not (a pick on a single image is refused
by the service, tests/services/test_candidates.py; Discord shows no Pick buttons there). The real
bot against the fake REST API."""

from __future__ import annotations

import io

from PIL import Image

from lmd_bot.rendering import candidate_seeds
from tests.cogs.conftest import recorded
from tests.cogs.world import OTHER, OWNER, discord_world, eventually, field, imagine

GAP = 4  # between a 512 px grid's tiles


def _results(world, thread_id: int) -> list[dict]:
    return [m for m in world.api.messages_in(thread_id) if field(m, "Seed") or field(m, "Seeds")]


def _upload(world, thread_id: int, filename: str) -> bytes:
    """The bytes of a file the bot uploaded to the thread."""
    for request in world.api.requests_to("POST", f"/channels/{thread_id}/messages"):
        for upload in request.files:
            if upload.filename == filename:
                return upload.data
    raise AssertionError(f"{filename} was not uploaded")


def _buttons(message) -> list[list[str]]:
    return [[c["custom_id"] for c in row["components"]] for row in message["components"]]


async def _grid(world, seed: int = 21):
    token = await imagine(world, seed=seed, candidates=4)
    thread_id = int(world.original(token)["thread"]["id"])
    [grid] = await eventually(lambda: _results(world, thread_id))
    await recorded(world.core, int(grid["id"]))
    return token, thread_id, grid


async def _press(world, custom_id: str, user: int, message) -> str:
    token = world.click(custom_id, user, int(message["id"]))
    await world.settle()
    return " ".join(f.get("content", "") for f in world.followups(token))


async def test_a_grid_of_four_is_posted_with_pick_buttons_and_pick_3_continues_from_it(tmp_path):
    async with discord_world(tmp_path) as world:
        token, thread_id, grid = await _grid(world)
        job = await world.core.repo.job(1)
        seeds = candidate_seeds(21, 4)
        assert "4 candidates" in field(world.original(token), "Scene")  # the plan says so
        assert grid["embeds"][0]["title"] == "Round 1 · 4 candidates"
        assert field(grid, "Seeds") == " · ".join(f"{k}: `{s}`" for k, s in enumerate(seeds, 1))
        assert "pick a candidate" in grid["content"]
        [image, _overlay] = grid["attachments"]
        assert image["filename"] == "round1-seed21-image.png"
        assert Image.open(io.BytesIO(_upload(world, thread_id, image["filename"]))).size == (
            2 * 512 + GAP,
            2 * 512 + GAP,
        )
        buttons = _buttons(grid)
        assert buttons[1] == [f"lmd:pick:{job.id}:{k}" for k in range(1, 5)]

        said = await _press(world, f"lmd:pick:{job.id}:3", OWNER, grid)
        assert "Candidate 3" in said and f"`{seeds[2]}`" in said
        picked = await eventually(
            lambda: len(_results(world, thread_id)) == 2 and _results(world, thread_id)[1]
        )
        assert picked["embeds"][0]["title"] == "Round 2 · candidate 3 of round 1"
        assert field(picked, "Seed") == f"`{seeds[2]}`" and len(_buttons(picked)) == 1  # no picks on it
        scene = await world.core.repo.scene_by_thread(thread_id)
        assert scene.seed == seeds[2]

        world.say(OWNER, thread_id, "move a blue cup right")
        await world.settle()
        third = await eventually(
            lambda: len(_results(world, thread_id)) == 3 and _results(world, thread_id)[2]
        )
        assert third["embeds"][0]["title"] == "Round 3" and field(third, "Seed") == f"`{seeds[2]}`"


async def test_a_reroll_of_a_grid_rerolls_all_four(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, grid = await _grid(world)
        world.react(OWNER, thread_id, int(grid["id"]))
        await world.settle()
        again = await eventually(
            lambda: len(_results(world, thread_id)) == 2 and _results(world, thread_id)[1]
        )
        assert again["embeds"][0]["title"] == "Round 2 · 4 candidates"
        assert field(again, "Seeds").startswith("1: `5000`")
        assert len(_buttons(again)[1]) == 4


async def test_a_pick_by_someone_else_is_answered_and_changes_nothing(tmp_path):
    async with discord_world(tmp_path) as world:
        _, thread_id, grid = await _grid(world)
        job_id = 1
        said = await _press(world, f"lmd:pick:{job_id}:1", OTHER, grid)
        assert "Only the person who started this scene" in said
        assert len(await world.core.repo.rounds((await world.core.repo.scene_by_thread(thread_id)).id)) == 1


async def test_settings_make_new_scenes_grids_and_discord_bounds_the_count(tmp_path):
    async with discord_world(tmp_path) as world:
        imagine_options = {o.name: o for o in world.bot.tree.get_command("imagine").parameters}
        assert (imagine_options["candidates"].min_value, imagine_options["candidates"].max_value) == (1, 4)
        token = world.slash("settings", 3, world.text_id, admin=True, candidates=2)
        await world.settle()
        [shown] = world.followups(token)
        assert "`2`" in field(shown, "Candidates")
        token = await imagine(world, seed=8)
        thread_id = int(world.original(token)["thread"]["id"])
        [grid] = await eventually(lambda: _results(world, thread_id))
        assert grid["embeds"][0]["title"] == "Round 1 · 2 candidates"
