"""Per-object runs do only the work the overall run reads (docs/method.md, "Per-object stage").

The overall run reads an object's latents up to its last frozen step and its attention maps up to
its last guided step; the mask comes from the model's prediction of the clean image at the last
step run. Every per-object VAE decode and SAM call of a render is one batched call.
"""

import pytest
import torch

from lmd_bot.diffusion.cache import ObjectCache
from lmd_bot.diffusion.cost import CallKind, CostMeter
from lmd_bot.diffusion.object_stage import object_steps
from lmd_bot.diffusion.params import LmdParams, ObjectSchedule
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.layout.schema import SceneLayout

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}
CUP = {"id": 3, "caption": "a blue cup", "box": [330, 40, 120, 160]}
STEPS = 5  # frozen steps 0-1 (latents 1-2), guided steps 0-2: per-object runs take 3 steps
TAKEN = 3
SIZE = 128
FULL = LmdParams.lmd_plus().model_copy(update={"object_schedule": ObjectSchedule.FULL})


def _spec(*objects):
    return build_spec(SceneLayout.model_validate({"objects": list(objects), "background": "A garden"}), 7)


def _lmd_plus(pipe, spec, **kwargs):
    return pipe.lmd_plus(spec, steps=STEPS, guidance_scale=7.5, height=SIZE, width=SIZE, **kwargs)


@pytest.fixture(scope="module")
def counted_run(components):
    """A 3-object lmd+ render with its model calls counted, and the batches of every VAE decode
    and SAM call."""
    decodes, sam_calls = [], []
    hooks = [
        components.vae.decoder.register_forward_pre_hook(lambda m, args: decodes.append(args[0].clone())),
        components.sam.model.register_forward_pre_hook(
            lambda m, args, kwargs: sam_calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
        ),
    ]
    meter = CostMeter()
    try:
        with meter.attach(components):
            result = _lmd_plus(LmdPipeline(components), _spec(CAT, BALL, CUP))
    finally:
        for hook in hooks:
            hook.remove()
    return result, meter, decodes, sam_calls


def test_the_run_length_is_the_last_step_the_overall_run_reads():
    params = LmdParams()
    assert object_steps(params, 50, sam=True) == 30  # guided steps 0-29 (transfer maps); frozen 0-24
    assert object_steps(params, STEPS, sam=True) == TAKEN
    assert object_steps(params.model_copy(update={"transfer_weight": 0.0}), 50, sam=True) == 25
    assert object_steps(params.model_copy(update={"frozen_step_ratio": 1.0}), 50, sam=True) == 50
    assert object_steps(FULL, 50, sam=True) == 50
    # Without SAM the mask is the attention averaged to the last step: every step is run.
    assert object_steps(params, 50, sam=False) == 50


def test_per_object_runs_stop_after_the_last_step_the_overall_run_reads(counted_run):
    result, meter, _, _ = counted_run
    object_passes = [f for f in meter.forwards if f.complete and f.batch == 6]  # 3 objects x CFG
    overall_passes = [f for f in meter.forwards if f.complete and f.batch == 2]
    assert len(object_passes) == TAKEN and len(overall_passes) == STEPS
    for run in result.objects:
        assert run.result.trajectory.shape[0] == TAKEN + 1  # the initial noise and every step run
    assert result.composition.latents.shape[0] == TAKEN + 1


def test_the_mask_is_taken_from_the_clean_image_predicted_at_the_last_step(components, counted_run):
    """The image SAM sees is the VAE decode of the DDIM prediction of x0 at the last step run,
    which the last two latents of the trajectory determine: z_k = sqrt(a_k) x0 + sqrt(1 - a_k) eps
    for k = the last step's timestep and the one after it."""
    result, _, decodes, _ = counted_run
    scheduler = components.scheduler
    scheduler.set_timesteps(STEPS)
    t, t_next = scheduler.timesteps[TAKEN - 1], scheduler.timesteps[TAKEN]
    a, b = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[t_next]
    z_t = torch.cat([run.result.trajectory[TAKEN - 1] for run in result.objects])
    z_next = torch.cat([run.result.trajectory[TAKEN] for run in result.objects])
    x0 = ((1 - b).sqrt() * z_t - (1 - a).sqrt() * z_next) / (
        a.sqrt() * (1 - b).sqrt() - b.sqrt() * (1 - a).sqrt()
    )
    vae = components.vae
    with torch.no_grad():
        expected = vae.post_quant_conv(x0 / vae.config.scaling_factor)  # what vae.decode feeds its decoder
    assert torch.allclose(decodes[0], expected, atol=1e-4)


def test_per_object_decodes_and_sam_are_one_batched_call(counted_run):
    _, meter, decodes, sam_calls = counted_run
    assert [d.shape[0] for d in decodes] == [3, 1]  # every object at once, then the image
    assert sam_calls == [3]
    assert meter.samples()[CallKind.SAM] == 3


def test_the_full_schedule_runs_every_step_and_decodes_the_final_latents(components):
    meter = CostMeter()
    with meter.attach(components):
        result = _lmd_plus(LmdPipeline(components, lmd_plus=FULL), _spec(CAT, BALL))
    assert len([f for f in meter.forwards if f.complete and f.batch == 4]) == STEPS
    assert result.objects[0].result.trajectory.shape[0] == STEPS + 1


def test_runs_of_another_schedule_are_never_taken_from_the_cache(components):
    cache = ObjectCache(2**30)
    spec = _spec(CAT, BALL)
    _lmd_plus(LmdPipeline(components), spec, cache=cache)
    full = _lmd_plus(LmdPipeline(components, lmd_plus=FULL), spec, cache=cache)
    assert full.stats.object_runs == 2 and full.stats.object_cache_hits == 0
    assert all(run.result.trajectory.shape[0] == STEPS + 1 for run in full.objects)


def test_without_sam_runs_take_every_step_for_their_attention_masks(components_no_sam):
    result = _lmd_plus(LmdPipeline(components_no_sam), _spec(BALL))
    assert result.stats.unet_forwards == STEPS + STEPS
    assert result.objects[0].result.trajectory.shape[0] == STEPS + 1
