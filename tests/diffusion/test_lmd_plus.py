"""LMD+ end to end on the tiny GLIGEN UNet: objects in place, SAM boxes, fusers, the guidance quirk."""

import numpy as np
import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense

from lmd_bot.diffusion.attention import GUIDANCE_KEYS
from lmd_bot.diffusion.latents import blend_noise, draw_noise, rect_mask
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.layout.geometry import nbox_to_grid_rect
from lmd_bot.layout.schema import SceneLayout

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}


def _spec(*objects, seed=7):
    layout = SceneLayout.model_validate({"objects": list(objects), "background": "A garden"})
    return build_spec(layout, seed)


@pytest.fixture(scope="module")
def plus_run(components):
    """A 128 px, 5-step LMD+ run of a cat and a ball, with what every UNet call was given."""
    unet = components.gligen_unet
    fuser = next(m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense))
    calls = []  # (batch, real grounding slots per row) per UNet call
    flags = []  # the fusers' state per UNet call
    hooks = [
        unet.position_net.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append((kwargs["masks"].shape[0], kwargs["masks"].sum(1).tolist())),
            with_kwargs=True,
        ),
        fuser.register_forward_pre_hook(lambda m, args: flags.append(m.enabled)),
    ]
    try:
        spec = _spec(CAT, BALL)
        result = LmdPipeline(components).lmd_plus(spec, steps=5, guidance_scale=7.5, height=128, width=128)
    finally:
        for hook in hooks:
            hook.remove()
    return spec, result, list(zip(calls, flags, strict=True))


def test_objects_are_generated_in_place_from_ten_percent_own_noise(components, plus_run):
    spec, result, _ = plus_run
    background = draw_noise(spec.seed, (1, 4, 16, 16))
    for run in result.objects:
        assert run.offset == (0, 0) and run.valid.all() and not run.cached
        assert run.result.box == run.spec.nbox  # generated at its own box, not centred
        assert run.result.guidance_losses == ()  # per-object runs are not guided
        own = draw_noise(run.spec.seed, (1, 4, 16, 16))
        expected = blend_noise(background, own, rect_mask(run.spec.nbox, 16, 16), 0.1)
        assert torch.allclose(run.trajectory[0], expected * components.scheduler.init_noise_sigma)
        assert run.mask.any()
        assert set(run.maps) == set(GUIDANCE_KEYS)  # for the transfer loss
    assert result.stats.sam_calls == 2  # SAM prompted with each box
    # Per-object runs: the 3 steps of 5 the overall run reads (it guides steps 0..2).
    assert result.stats.unet_forwards == 3 + 5 and result.stats.object_runs == 2


def test_fusers_and_grounding_in_object_runs_overall_run_and_guidance(plus_run):
    _, result, calls = plus_run
    denoising = [(batch, slots, on) for (batch, slots), on in calls if batch > 1]
    on, off = [True] * 2, [False] * 3  # int(0.4 * 5) = 2 grounded steps
    # Per-object runs: both objects in one CFG batch, one box each, the unconditional rows masked.
    # They stop after the 3 steps of 5 the overall run reads.
    objects = [([0.0, 0.0, 1.0, 1.0], flag) for flag in on + off[:1]]
    # Overall run: both boxes in the conditional row.
    overall = [([0.0, 2.0], flag) for flag in on + off]
    assert [(slots, flag) for _, slots, flag in denoising] == objects + overall
    # Guidance passes (batch 1, conditional only) see null grounding tokens (the reference's quirk)
    # with the fusers in the state of their step.
    guidance = [i for i, ((batch, _), _) in enumerate(calls) if batch == 1]
    assert len(guidance) == result.stats.guided_passes >= 1
    for i in guidance:
        (_, slots), flag = calls[i]
        next_denoising = next(c for c in calls[i:] if c[0][0] > 1)
        assert slots == [0.0] and flag == next_denoising[1]


def test_frozen_steps_pin_the_objects_in_lmd_plus(components):
    spec = _spec(CAT, BALL, seed=3)
    overall = []
    result = LmdPipeline(components).lmd_plus(
        spec,
        steps=4,
        guidance_scale=7.5,
        height=128,
        width=128,
        on_step=lambda stage, step, total, z: overall.append(z.clone()) if stage == "overall" else None,
    )
    comp = result.composition
    assert comp.frozen.any()
    for k in (1, 2):  # int(0.5 * 4) frozen steps
        assert torch.equal(overall[k - 1][..., comp.frozen], comp.latents[k][..., comp.frozen])


def test_lmd_plus_without_sam_takes_masks_from_attention_inside_the_box(components_no_sam):
    result = LmdPipeline(components_no_sam).lmd_plus(
        _spec(BALL, seed=2), steps=3, guidance_scale=7.5, height=128, width=128
    )
    (run,) = result.objects
    assert result.stats.sam_calls == 0 and run.mask.any()
    rows, cols = torch.nonzero(run.mask, as_tuple=True)
    # Within the box grown by one cell of the attention map, 4x4 at 128 px (4 latent cells a side).
    r = nbox_to_grid_rect(run.spec.nbox, 4, 4)
    assert rows.min() >= 4 * (r.y0 - 1) and rows.max() < 4 * (r.y1 + 1)
    assert cols.min() >= 4 * (r.x0 - 1) and cols.max() < 4 * (r.x1 + 1)
    assert not run.mask.all()


def test_batched_and_one_by_one_object_runs_agree(components_no_sam):
    """One UNet call per step for all objects vs one per object: the same runs up to float rounding
    (observed differences about 3e-5 on latents of unit scale; tolerance 1e-4)."""
    spec = _spec(CAT, BALL, seed=4)

    def render(batch_size):
        pipe = LmdPipeline(components_no_sam, object_batch_size=batch_size)
        return pipe.lmd_plus(spec, steps=3, guidance_scale=7.5, height=128, width=128)

    batched, alone = render(8), render(1)
    assert batched.stats.unet_forwards == 3 + 3 and alone.stats.unet_forwards == 2 * 3 + 3
    for a, b in zip(batched.objects, alone.objects, strict=True):
        assert torch.allclose(a.trajectory, b.trajectory, atol=1e-4)
        assert torch.equal(a.mask, b.mask)
        for key in GUIDANCE_KEYS:
            assert torch.allclose(a.maps[key], b.maps[key], atol=1e-4)
    assert torch.allclose(batched.latents, alone.latents, atol=1e-4)


def test_lmd_plus_without_objects_runs_the_fusers_on_null_grounding_tokens(components):
    """The reference's LMD+ with no boxes is still a GLIGEN pass: fusers on for int(0.4 T) steps,
    every slot masked in both CFG halves; the learned null tokens change the image."""
    from tests.diffusion.helpers import diffusers_sd

    unet = components.gligen_unet
    fuser = next(m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense))
    calls, flags = [], []
    hooks = [
        unet.position_net.register_forward_pre_hook(
            lambda m, args, kwargs: calls.append((kwargs["masks"].shape[0], kwargs["masks"].sum().item())),
            with_kwargs=True,
        ),
        fuser.register_forward_pre_hook(lambda m, args: flags.append(m.enabled)),
    ]
    spec = _spec(seed=3)
    try:
        result = LmdPipeline(components).lmd_plus(spec, steps=5, guidance_scale=7.5, height=128, width=128)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [(2, 0.0)] * 5  # every denoising call grounded, no real slot in either half
    assert flags == [True, True, False, False, False]  # int(0.4 * 5) = 2 grounded steps
    assert result.stats.guided_passes == 0 and result.composition is None
    fusers_off = diffusers_sd(components, spec.prompt, spec.negative, 3, 5, 128, unet=unet)
    assert not np.array_equal(np.asarray(result.image), np.asarray(fusers_off))
