"""✨ Refine through the service layer: the bot's and each server's refine setting, the refine job
of a finished image (a new result of the same round, nothing re-rendered, queued once), on the
real worker process with the tiny random SDXL-refiner-shaped model and with the preview renderer."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from lmd_bot.rendering import Refine, RenderMode
from lmd_bot.scenes.models import JobStatus
from lmd_bot.services import PlanView, ResultView, SettingsChange
from lmd_bot.services.errors import GridNotRefinableError, NotOwnerError, NotRefinableError, RefineOffError
from lmd_bot.services.job_specs import SourceImageGoneError
from tests.services.conftest import ADMIN, ALICE, BOB, TINY_QUEUE, TINY_REFINING, TINY_RENDER_S, running_core

TINY = {"diffusion": TINY_REFINING, "queue": {"renderer": "tiny", **TINY_QUEUE}}


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def _rendered(app, notes, actor=ALICE, **kw) -> tuple[PlanView, ResultView]:
    plan = await app.scenes.imagine(actor, "a red apple, a blue cup", notes, **kw)
    assert isinstance(plan, PlanView) and plan.job is not None
    result = await notes.result_of(plan.job.id, timeout=TINY_RENDER_S)
    assert isinstance(result, ResultView), result
    return plan, result


async def test_refine_on_request_refines_the_rounds_image_once_on_the_tiny_sdxl_refiner(tmp_path):
    async with running_core(tmp_path, None, seeds=list(range(1000, 1100)), **TINY) as (app, notes):
        plan, first = await _rendered(app, notes, seed=5)
        assert first.refinable and not first.job.refine  # "button": offered, not refined
        assert _size(first.image_png) == (128, 128)

        job, queued = await app.refines.refine(ALICE, first.job.id)
        again, queued_again = await app.refines.refine(ALICE, first.job.id)  # a second press
        assert queued and not queued_again and again.id == job.id
        assert job.refine and job.refine_of == first.job.id
        assert (job.round_id, job.seed, job.steps) == (first.round.id, 5, first.job.steps)

        refined = await notes.result_of(job.id, timeout=TINY_RENDER_S)
        assert isinstance(refined, ResultView), refined
        assert refined.round.id == first.round.id and refined.round.layout == first.round.layout
        assert not refined.refinable  # a refined result offers no ✨
        assert _size(refined.image_png) == (256, 256)  # refine_size, the layout's aspect
        assert _size(refined.overlay_png)[0] == 512  # the boxes drawn on it, on the layout's canvas
        scene = await app.repo.scene(plan.scene.id)
        assert scene.head_round_id == first.round.id  # no new round, the scene as it was
        assert len(await app.repo.rounds(plan.scene.id)) == 1

        _, after_done = await app.refines.refine(ALICE, first.job.id)  # pressed once more, later
        assert not after_done
        jobs = await app.repo.recent_jobs_of_user(ALICE.user_id)
        assert sorted(j.id for j in jobs) == [first.job.id, job.id]


async def test_servers_choose_off_on_or_button_where_the_bot_has_a_refiner(tmp_path):
    async with running_core(tmp_path, diffusion={"refine": "button"}) as (app, notes):
        assert (await app.scenes.server_settings(100)).refine is Refine.BUTTON  # the bot's default
        view = await app.scenes.update_server_settings(ADMIN, SettingsChange(refine=Refine.OFF))
        assert view.refine is Refine.OFF and view.stored.refine is Refine.OFF
        _, result = await _rendered(app, notes, mode=RenderMode.SD)
        assert not result.refinable
        with pytest.raises(RefineOffError):
            await app.refines.refine(ALICE, result.job.id)

        await app.scenes.update_server_settings(ADMIN, SettingsChange(refine=Refine.ON))
        _, result = await _rendered(app, notes, mode=RenderMode.SD)
        assert result.job.refine and not result.refinable
        assert _size(result.image_png) == (1024, 1024)  # the preview renderer's refinement doubles
        with pytest.raises(NotRefinableError):  # refined already
            await app.refines.refine(ALICE, result.job.id)

        await app.scenes.update_server_settings(ADMIN, SettingsChange(refine=Refine.BUTTON))
        _, result = await _rendered(app, notes, mode=RenderMode.SD)
        assert result.refinable
        with pytest.raises(NotOwnerError):  # only the scene's editors refine
            await app.refines.refine(BOB, result.job.id)

        _, grid = await _rendered(app, notes, mode=RenderMode.SD, candidates=2)
        with pytest.raises(GridNotRefinableError) as err:  # one image at a time: pick first
            await app.refines.refine(ALICE, grid.job.id)
        assert "pick one first" in err.value.user_message


async def test_a_bot_without_a_refiner_offers_none_and_says_why_to_admins(tmp_path):
    async with running_core(tmp_path) as (app, notes):  # diffusion.refine = "off", the default
        with pytest.raises(RefineOffError) as err:
            await app.scenes.update_server_settings(ADMIN, SettingsChange(refine=Refine.BUTTON))
        assert "diffusion.refine" in err.value.user_message
        _, result = await _rendered(app, notes, mode=RenderMode.SD)
        assert not result.refinable and (await app.scenes.server_settings(100)).refine is Refine.OFF


async def test_presses_at_once_queue_one_job_and_a_lost_image_fails_with_a_way_out(tmp_path):
    async with running_core(tmp_path, diffusion={"refine": "button"}) as (app, notes):
        _, result = await _rendered(app, notes, mode=RenderMode.SD)
        outcomes = await asyncio.gather(*(app.refines.refine(ALICE, result.job.id) for _ in range(3)))
        assert len({job.id for job, _ in outcomes}) == 1 and [q for _, q in outcomes].count(True) == 1
        assert isinstance(await notes.result_of(outcomes[0][0].id), ResultView)

        _, other = await _rendered(app, notes, mode=RenderMode.SD)
        Path((await app.repo.job(other.job.id)).image_path).unlink()  # the storage lost it
        with pytest.raises(SourceImageGoneError) as err:
            await app.refines.refine(ALICE, other.job.id)
        assert "Reroll" in err.value.user_message
        [failed] = [
            j for j in await app.repo.recent_jobs_of_user(ALICE.user_id) if j.refine_of == other.job.id
        ]
        assert failed.status == JobStatus.FAILED  # not left queued
