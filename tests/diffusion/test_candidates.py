"""Candidates: one layout at several seeds rendered as one batch, on the tiny models. Each
candidate is the single render of its seed; the batch makes the UNet calls of one render."""

import numpy as np
import pytest

from lmd_bot.diffusion.cache import ObjectCache
from lmd_bot.diffusion.cost import CallKind, CostMeter
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.renderer import DiffusionRenderer
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode, RenderRequest, candidate_seeds

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}
STEPS = 3
SIZE = {"steps": STEPS, "guidance_scale": 7.5, "height": 128, "width": 128}
# Batched and single runs differ by float rounding only; pixels are 0..255.
PIXEL_TOLERANCE = 2


def _layout(*objects):
    return SceneLayout.model_validate({"objects": list(objects), "background": "A garden"})


def _counted(components, render):
    meter = CostMeter()
    with meter.attach(components):
        out = render()
    return out, meter


def _close(a, b) -> bool:
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return int(diff.max()) <= PIXEL_TOLERANCE


def test_candidate_seeds_start_at_the_scene_seed_and_are_distinct_and_stable():
    seeds = candidate_seeds(7, 4)
    assert seeds[0] == 7 and len(set(seeds)) == 4
    assert seeds == candidate_seeds(7, 4) and candidate_seeds(7, 2) == seeds[:2]
    assert all(0 <= s < 2**32 for s in seeds)
    assert candidate_seeds(8, 4)[1:] != seeds[1:]


@pytest.mark.parametrize("mode", [RenderMode.LMD, RenderMode.LMD_PLUS, RenderMode.FAST])
def test_each_candidate_equals_the_single_render_of_its_seed_in_one_batch(components, mode):
    pipe = LmdPipeline(components)
    layout = _layout(CAT, BALL)
    seeds = candidate_seeds(5, 4)
    specs = [build_spec(layout, seed) for seed in seeds]
    batch, meter = _counted(components, lambda: pipe.candidates(specs, mode, **SIZE))
    single = {
        RenderMode.LMD: pipe.lmd,
        RenderMode.LMD_PLUS: pipe.lmd_plus,
        RenderMode.FAST: pipe.fast,
    }[mode]
    alone, one = _counted(components, lambda: single(specs[2], **SIZE))

    assert len(batch) == 4
    assert _close(batch[2].image, alone.image)
    # Only the seed differs: four different pictures.
    pictures = [np.asarray(r.image) for r in batch]
    assert all(not np.array_equal(pictures[i], pictures[j]) for i in range(4) for j in range(i))
    # The batch makes exactly the UNet calls of one render, each four times as wide.
    assert [f.batch for f in meter.forwards] == [4 * f.batch for f in one.forwards]
    assert batch[0].stats.unet_forwards == alone.stats.unet_forwards
    assert meter.samples()[CallKind.UNET] == 4 * one.samples()[CallKind.UNET]


def test_picking_a_candidate_keeps_its_object_runs_in_the_cache(components):
    """The grid fills the per-object cache under each seed's keys: a follow-up rendered with the
    picked candidate's seed reuses its objects' runs, and gives the candidate's picture again."""
    renderer = DiffusionRenderer(LmdPipeline(components), size=128, cache=ObjectCache(2**30))
    grid = RenderRequest(layout=_layout(CAT, BALL), mode=RenderMode.LMD, seed=3, steps=STEPS, candidates=4)
    out = renderer.render(grid)
    assert len(out.candidates) == 4 and out.image is out.candidates[0]
    assert out.stats["object_runs"] == 8

    picked = grid.seeds[2]
    again = renderer.render(grid.model_copy(update={"seed": picked, "candidates": 1}))
    assert again.stats["object_runs"] == 0 and again.stats["object_cache_hits"] == 2
    assert _close(again.image, out.candidates[2])
    assert again.candidates == []


def test_sd_candidates_are_one_batch_of_plain_sd(components):
    renderer = DiffusionRenderer(LmdPipeline(components), size=128)
    grid = RenderRequest(
        layout=_layout(CAT), prompt="a cat", mode=RenderMode.SD, seed=4, steps=STEPS, candidates=3
    )
    out, meter = _counted(components, lambda: renderer.render(grid))
    alone = renderer.render(grid.model_copy(update={"seed": grid.seeds[1], "candidates": 1}))
    assert [f.batch for f in meter.forwards] == [6] * STEPS
    assert len(out.candidates) == 3 and _close(out.candidates[1], alone.image)


def test_candidates_must_share_one_layout(components):
    pipe = LmdPipeline(components)
    specs = [build_spec(_layout(CAT), 1), build_spec(_layout(BALL), 2)]
    with pytest.raises(ValueError, match="one layout"):
        pipe.candidates(specs, RenderMode.LMD, **SIZE)


@pytest.mark.parametrize("count", [0, 5])
def test_a_request_takes_one_to_four_candidates(count):
    with pytest.raises(ValueError, match="candidates"):
        RenderRequest(layout=_layout(CAT), candidates=count)
