"""The cost meter counts the model calls renders really make, and weights them by the FLOP table."""

import pytest

from lmd_bot.commands.bench import case_pipeline
from lmd_bot.diffusion.cost import SD_STEPS, CallKind, CostMeter, load_flop_table
from lmd_bot.diffusion.guidance import GuidanceParams
from lmd_bot.diffusion.params import LmdParams
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.layout.schema import SceneLayout

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}
STEPS = 5  # guided steps 0, 1, 2 with 4, 2 and 1 iterations: 7 guidance passes per run


def _spec():
    layout = SceneLayout.model_validate({"objects": [CAT, BALL], "background": "A garden"})
    return build_spec(layout, seed=7)


def _counted(components, render):
    meter = CostMeter()
    with meter.attach(components):
        render()
    return meter


def test_plain_sd_at_50_steps_is_one_sd_unit(components):
    pipe = LmdPipeline(components)
    meter = _counted(
        components,
        lambda: pipe.plain("a cat", "", seed=0, steps=SD_STEPS, guidance_scale=7.5, height=64, width=64),
    )
    assert [f.batch for f in meter.forwards] == [2] * SD_STEPS  # one CFG forward per step
    assert meter.samples() == {CallKind.UNET: 2 * SD_STEPS, CallKind.VAE_DECODE: 1, CallKind.TEXT_ENCODER: 2}
    assert meter.units(load_flop_table()) == pytest.approx(1.0)


def test_lmd_guidance_adds_exactly_its_passes_with_their_batch(components):
    unguided = LmdParams(
        object_guidance=GuidanceParams(max_index_step=0), overall_guidance=GuidanceParams(max_index_step=0)
    )
    plain = LmdPipeline(components, lmd=unguided)
    worst = case_pipeline(components, best=False)  # guidance never stops early
    kwargs = {"steps": STEPS, "guidance_scale": 7.5, "height": 128, "width": 128}
    without = _counted(components, lambda: plain.lmd(_spec(), **kwargs)).samples()
    meter = _counted(components, lambda: worst.lmd(_spec(), **kwargs))
    counted = meter.samples()
    # Per-object runs: both objects in one CFG batch of 4, for the steps the overall run reads: its
    # guided steps 0..2 (its frozen steps 0..1 without guidance); the overall run: a CFG batch of 2.
    assert counted[CallKind.UNET] == 3 * 4 + STEPS * 2
    assert without[CallKind.UNET] == 2 * 4 + STEPS * 2
    # 7 guidance passes for both objects together (batch 2), 7 for the overall run (batch 1).
    assert counted[CallKind.GUIDANCE_FORWARD] == counted[CallKind.GUIDANCE_BACKWARD] == 7 * 2 + 7
    assert sum(not f.complete for f in meter.forwards) == 14
    assert CallKind.GUIDANCE_FORWARD not in without
    assert counted[CallKind.VAE_DECODE] == without[CallKind.VAE_DECODE] == 3  # each object for SAM, the image
    assert counted[CallKind.SAM] == without[CallKind.SAM] == 2
    table = load_flop_table()
    extra = 21 * (table.gflops[CallKind.GUIDANCE_FORWARD] + table.gflops[CallKind.GUIDANCE_BACKWARD])
    extra += 4 * table.gflops[CallKind.UNET]  # the per-object step the transfer maps need
    assert meter.gflops(table) - sum(n * table.gflops[k] for k, n in without.items()) == pytest.approx(extra)


def test_lmd_plus_counts_the_fusers_where_they_run(components):
    meter = _counted(
        components,
        lambda: case_pipeline(components, best=False).lmd_plus(
            _spec(), steps=STEPS, guidance_scale=7.5, height=128, width=128
        ),
    )
    counted = meter.samples()
    # Fusers on for int(0.4 * 5) = 2 steps: per-object batch 4 (3 steps run) and overall batch 2.
    assert counted[CallKind.UNET_FUSERS] == 2 * 4 + 2 * 2
    assert counted[CallKind.UNET] == 1 * 4 + 3 * 2
    # The overall guidance (null grounding, fusers on at steps 0 and 1): 4 + 2 passes, then 1 without.
    assert counted[CallKind.GUIDANCE_FORWARD_FUSERS] == counted[CallKind.GUIDANCE_BACKWARD_FUSERS] == 6
    assert counted[CallKind.GUIDANCE_FORWARD] == counted[CallKind.GUIDANCE_BACKWARD] == 1
    assert counted[CallKind.SAM] == 2


def test_best_case_stops_guidance_after_the_first_guided_step(components):
    kwargs = {"steps": STEPS, "guidance_scale": 7.5, "height": 128, "width": 128}
    meter = _counted(components, lambda: case_pipeline(components, best=True).lmd(_spec(), **kwargs))
    # Each run's first loss is below the threshold; stopping is decided once per step, so step 0's
    # 4 iterations run (both objects together, then the overall run) and no later step is guided.
    assert [f.batch for f in meter.forwards if not f.complete] == [2] * 4 + [1] * 4
