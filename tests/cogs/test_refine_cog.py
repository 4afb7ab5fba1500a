"""✨ Refine in Discord: the button on results, the refined result as a new message of the same
round, one job however often it is pressed, and ``/settings refine`` (the real bot against the
fake REST API; the worker runs the tiny random SDXL-refiner-shaped model)."""

from __future__ import annotations

import io

from PIL import Image

from lmd_bot.config import DiffusionSettings
from lmd_bot.jobs.renderers import RendererSpec
from tests.cogs.conftest import recorded
from tests.cogs.world import OTHER, OWNER, discord_world, eventually, field, first_result, imagine, results_in
from tests.services.conftest import TINY_QUEUE, TINY_REFINING, TINY_RENDER_S

TINY = RendererSpec(
    factory="lmd_bot.jobs.renderers:diffusion_renderer",
    kwargs={"diffusion": DiffusionSettings(**TINY_REFINING).model_dump(mode="json"), "tiny": True},
)


def _buttons(message) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


async def test_the_refine_button_posts_the_refined_image_as_a_new_result_once(tmp_path):
    async with discord_world(
        tmp_path,
        renderer=TINY,
        diffusion=TINY_REFINING,
        queue=TINY_QUEUE,
    ) as world:
        token = await imagine(world, seed=21)
        thread_id = int(world.original(token)["thread"]["id"])
        [result] = await eventually(lambda: results_in(world, thread_id), TINY_RENDER_S)
        await recorded(world.core, int(result["id"]))
        scene = await world.core.repo.scene_by_thread(thread_id)
        [job] = await world.core.repo.recent_jobs_of_user(OWNER)
        rid = scene.head_round_id
        assert _buttons(result) == [
            f"lmd:reroll:{rid}",
            f"lmd:undo:{rid}",
            f"lmd:edit:{rid}",
            f"lmd:layout:{rid}",
            f"lmd:refine:{job.id}",
        ]
        refine = f"lmd:refine:{job.id}"

        denied = world.click(refine, OTHER, int(result["id"]))  # not the scene's editor
        pressed = world.click(refine, OWNER, int(result["id"]))
        twice = world.click(refine, OWNER, int(result["id"]))
        await world.settle()
        assert "Only the person who started" in str(world.followups(denied))
        said = str(world.followups(pressed)) + str(world.followups(twice))
        assert "Refining this image" in said and "being refined already" in said

        results = await eventually(
            lambda: len(results_in(world, thread_id)) == 2 and results_in(world, thread_id), TINY_RENDER_S
        )
        refined = results[1]
        await recorded(world.core, int(refined["id"]))
        assert refined["embeds"][0]["title"] == "Round 1 · refined ✨" and field(refined, "Seed") == "`21`"
        assert refined["content"] == f"<@{OWNER}> round 1 refined is ready."
        assert [u["id"] for u in refined["mentions"]] == [str(OWNER)]
        assert not any(b.startswith("lmd:refine") for b in _buttons(refined))  # refined: no ✨
        assert _buttons(refined)[0] == f"lmd:reroll:{rid}"  # the same round: the scene did not move
        assert (await world.core.repo.scene_by_thread(thread_id)).head_round_id == rid
        names = [a["filename"] for a in refined["attachments"]]
        assert names == ["round1-seed21-refined-image.png", "round1-seed21-refined-overlay.png"]
        [upload] = [
            f
            for r in world.api.requests_to("POST", f"/channels/{thread_id}/messages")
            for f in r.files
            if f.filename == names[0]
        ]
        assert Image.open(io.BytesIO(upload.data)).size == (256, 256)  # refine_size
        jobs = await world.core.repo.recent_jobs_of_user(OWNER)
        assert len(jobs) == 2 and jobs[0].refine_of == job.id  # pressed twice, refined once

        late = world.click(refine, OWNER, int(result["id"]))  # pressed again once it is done
        await world.settle()
        assert "refined already" in str(world.followups(late))
        assert len(await world.core.repo.recent_jobs_of_user(OWNER)) == 2


async def test_a_result_shown_again_by_undo_has_the_buttons_it_was_first_posted_with(tmp_path):
    async with discord_world(tmp_path, diffusion={"refine": "button"}) as world:
        _, thread_id, first = await first_result(world, seed=21)
        [job] = await world.core.repo.recent_jobs_of_user(OWNER)
        assert f"lmd:refine:{job.id}" in _buttons(first)

        async def undone_from(message) -> dict:
            """🔄 on ``message``, then ↩️ on the new result: the message showing ``message``'s round again."""
            shown = len(results_in(world, thread_id))
            world.click(_buttons(message)[0], OWNER, int(message["id"]))
            await world.settle()
            rerolled = (
                await eventually(
                    lambda: len(results_in(world, thread_id)) > shown and results_in(world, thread_id)
                )
            )[-1]
            await recorded(world.core, int(rerolled["id"]))
            world.click(_buttons(rerolled)[1], OWNER, int(rerolled["id"]))
            await world.settle()
            back = results_in(world, thread_id)[-1]
            assert back["content"] == "Back to round 1"
            await recorded(world.core, int(back["id"]))
            return back

        back = await undone_from(first)
        assert _buttons(back) == _buttons(first)  # ✨ again, for the image shown: round 1's job

        world.click(f"lmd:refine:{job.id}", OWNER, int(back["id"]))  # ✨ on the image shown again
        await world.settle()
        refined = await eventually(
            lambda: [m for m in results_in(world, thread_id) if "refined" in m["embeds"][0]["title"]]
        )
        await recorded(world.core, int(refined[0]["id"]))
        back = await undone_from(refined[0])  # round 1 shows its newest image now: the refined one
        assert back["embeds"][0]["title"] == "Round 1 · refined ✨ (shown again)"
        assert _buttons(back) == _buttons(refined[0])  # refined: no ✨


async def test_settings_refine_is_shown_and_changed_by_admins(tmp_path):
    async with discord_world(tmp_path, diffusion={"refine": "button"}) as world:
        token = world.slash("settings", OWNER, world.text_id, admin=True, refine="off")
        await world.settle()
        [shown] = world.followups(token)
        [embed] = shown["embeds"]
        [row] = [f["value"] for f in embed["fields"] if f["name"] == "Refine"]
        assert row.startswith("`off`") and "default" not in row
        _, _, result = await first_result(world)
        assert not any(b.startswith("lmd:refine") for b in _buttons(result))
