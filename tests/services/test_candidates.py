"""Grids of candidates through the service layer (real SQLite, a worker process, the preview
renderer, which tints each picture by its seed): one job renders every candidate, the result is a
numbered 2x2 grid, a pick continues the scene from its candidate's seed and image, a reroll of
the grid rerolls every candidate, and bad input gets a clear message."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from lmd_bot.errors import LmdError
from lmd_bot.rendering import candidate_seeds
from lmd_bot.scenes.models import JobStatus, RoundKind
from lmd_bot.services import PlanView, ResultView, SettingsChange
from lmd_bot.services.errors import CandidateCountError, NotAGridError, NotOwnerError
from lmd_bot.services.images import candidate_paths
from tests.services.conftest import ADMIN, ALICE, BOB

GAP = 4  # between the grid's tiles, at 512 px


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def _grid(app, notes, *, seed=21, **kw):
    plan = await app.scenes.imagine(ALICE, "a red apple, a blue cup", notes, seed=seed, candidates=4, **kw)
    assert isinstance(plan, PlanView) and plan.job is not None
    result = await notes.result_of(plan.job.id)
    assert isinstance(result, ResultView)
    return plan, result


async def test_four_candidates_are_one_job_shown_as_a_numbered_2x2_grid(core):
    app, notes = core
    plan, result = await _grid(app, notes)
    assert plan.round.candidates == 4
    jobs = await app.repo.recent_jobs_of_user(ALICE.user_id)
    assert [j.id for j in jobs] == [plan.job.id]  # one job rendered all four
    assert result.job.seed == 21 and result.round.candidates == 4
    assert _size(result.image_png) == (2 * 512 + GAP, 2 * 512 + GAP)
    # The overlay grid: the layout over every tile, the legend once under them.
    width, height = _size(result.overlay_png)
    assert width == 2 * 512 + GAP and height > 2 * 512 + GAP
    # Each candidate is saved for the pick; they differ by seed only (the preview renderer's tint).
    grid = Image.open(io.BytesIO(result.image_png)).convert("RGB")
    tints = set()
    for number in range(1, 5):
        image, overlay = candidate_paths(result.job.image_path, number)
        picture = Image.open(image).convert("RGB")
        assert picture.size == (512, 512) and Path(overlay).is_file()
        x, y = (number - 1) % 2 * (512 + GAP), (number - 1) // 2 * (512 + GAP)
        assert grid.getpixel((x + 500, y + 500)) == picture.getpixel((500, 500))  # tile k is candidate k
        tints.add(picture.getpixel((500, 500)))
    assert len(tints) == 4


async def test_picking_candidate_3_continues_the_scene_with_its_seed(core):
    app, notes = core
    plan, grid = await _grid(app, notes)
    picked = await app.candidates.pick(ALICE, grid.job.id, 3)
    seed = candidate_seeds(21, 4)[2]
    assert picked.round.kind == RoundKind.PICK and picked.round.parent_id == plan.round.id
    assert picked.round.seed == picked.job.seed == seed and picked.round.candidates == 1
    assert picked.job.status == JobStatus.DONE  # nothing rendered: the image is the candidate's
    assert picked.image_png == Path(candidate_paths(grid.job.image_path, 3)[0]).read_bytes()
    shown = await notes.result_of(picked.job.id)  # shown as a result, like a render's
    assert shown.round.id == picked.round.id
    scene = await app.repo.scene(plan.scene.id)
    assert scene.seed == seed and scene.head_round_id == picked.round.id

    revised = await app.scenes.instruct(ALICE, plan.scene.id, "move apple right", notes)
    result = await notes.result_of(revised.job.id)
    assert result.round.parent_id == picked.round.id
    assert result.job.seed == seed and result.round.candidates == 1
    assert _size(result.image_png) == (512, 512)  # one image again


async def test_a_reroll_of_the_grid_rerolls_all_candidates(core):
    app, notes = core
    plan, grid = await _grid(app, notes)
    job = await app.scenes.reroll_message(ALICE, grid.job.status_message_id)
    result = await notes.result_of(job.id)
    assert result.round.kind == RoundKind.REROLL and result.round.candidates == 4
    assert result.job.seed == 1000 != grid.job.seed  # the test's seed source
    assert _size(result.image_png) == _size(grid.image_png)
    # Before a pick, the scene's instructions render grids too.
    revised = await app.scenes.instruct(ALICE, plan.scene.id, "make it night", notes)
    assert revised.round.candidates == 4


@pytest.mark.parametrize("count", [0, 5])
async def test_a_candidate_count_out_of_1_to_4_is_refused_before_planning(core, count):
    app, notes = core
    with pytest.raises(CandidateCountError) as caught:
        await app.scenes.imagine(ALICE, "a red apple", notes, candidates=count)
    assert "1 to 4" in caught.value.user_message
    assert app.planner.calls == [] and await app.repo.recent_jobs_of_user(ALICE.user_id) == []
    with pytest.raises(CandidateCountError):
        await app.scenes.update_server_settings(ADMIN, SettingsChange(candidates=count))


async def test_picks_that_make_no_sense_get_a_clear_message(core):
    app, notes = core
    single = await app.scenes.imagine(ALICE, "a red apple", notes, seed=3)
    await notes.result_of(single.job.id)
    with pytest.raises(NotAGridError) as caught:
        await app.candidates.pick(ALICE, single.job.id, 1)
    assert "single image" in caught.value.user_message
    _, grid = await _grid(app, notes)
    with pytest.raises(LmdError) as caught:
        await app.candidates.pick(ALICE, grid.job.id, 5)
    assert "pick 1 to 4" in caught.value.user_message
    with pytest.raises(NotOwnerError):
        await app.candidates.pick(BOB, grid.job.id, 1)
    assert len(await app.repo.rounds(grid.scene.id)) == 1  # nothing was added


async def test_the_server_setting_makes_every_new_scene_a_grid(core):
    app, notes = core
    view = await app.scenes.update_server_settings(ADMIN, SettingsChange(candidates=4))
    assert view.candidates == 4 and view.stored.candidates == 4
    plan = await app.scenes.imagine(ALICE, "a red apple", notes)
    assert plan.round.candidates == 4
    one = await app.scenes.imagine(ALICE, "a blue cup", notes, candidates=1)  # the option wins
    assert one.round.candidates == 1
