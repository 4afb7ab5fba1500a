"""The LMD pipeline end to end on tiny random-weight models (few steps, small images)."""

import numpy as np
import pytest
import torch

from lmd_bot.diffusion.attention import GUIDANCE_KEYS
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.spec import OVERALL_NEGATIVE, build_spec
from lmd_bot.errors import CancelledError
from lmd_bot.layout.schema import SceneLayout
from tests.diffusion.helpers import diffusers_sd

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}


def _layout(*objects, negative="dogs"):
    return SceneLayout.model_validate(
        {"objects": list(objects), "background": "A realistic photo of a garden", "negative": negative}
    )


def test_plain_sd_equals_diffusers_stable_diffusion_pipeline(components):
    pipe = LmdPipeline(components)
    ours, _ = pipe.plain(
        "a cat on a sofa", "blurry", seed=11, steps=4, guidance_scale=7.5, height=128, width=128
    )
    theirs = diffusers_sd(components, "a cat on a sofa", "blurry", 11, 4, 128)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_layout_without_objects_is_plain_sd_on_background_and_negative(components):
    spec = build_spec(_layout(negative="flowers"), seed=3)
    result = LmdPipeline(components).lmd(spec, steps=4, guidance_scale=7.5, height=128, width=128)
    theirs = diffusers_sd(
        components, "A realistic photo of a garden", f"flowers, {OVERALL_NEGATIVE}", 3, 4, 128
    )
    assert np.array_equal(np.asarray(result.image), np.asarray(theirs))
    assert result.stats.guided_passes == 0 and result.composition is None


@pytest.fixture(scope="module")
def two_object_run(components):
    """A 256 px, 5-step LMD run of a cat and a ball, with every overall step's latents."""
    spec = build_spec(_layout(CAT, BALL), seed=7)
    events = []
    before = dict(components.unet.attn_processors)
    result = LmdPipeline(components).lmd(
        spec,
        steps=5,
        guidance_scale=7.5,
        height=256,
        width=256,
        on_step=lambda stage, step, total, z: events.append((stage, step, total, z.clone())),
    )
    assert all(components.unet.attn_processors[k] is v for k, v in before.items())
    return spec, result, events


def test_progress_covers_every_object_and_the_overall_run(two_object_run):
    _, result, events = two_object_run
    # The two objects are denoised together, one batched UNet call per step, for the 3 steps of 5
    # the overall run reads (it guides steps 0..2); then the overall run.
    assert [(s, i, n) for s, i, n, _ in events] == [("objects", i, 8) for i in range(1, 4)] + [
        ("overall", i, 8) for i in range(4, 9)
    ]
    assert result.image.size == (256, 256)
    assert result.stats.unet_forwards == 8
    assert result.stats.sam_calls == 2 and result.stats.object_runs == 2
    # 5 steps guide steps 0..2 (4 + 2 + 1 iterations) per batch while the energy stays above 5.
    assert 3 <= result.stats.guided_passes <= 14
    assert all(1 <= len(run.result.guidance_losses) <= 7 for run in result.objects)
    assert torch.isfinite(result.latents).all()


def test_frozen_steps_pin_the_foreground_to_the_object_latents(two_object_run):
    _, result, events = two_object_run
    comp = result.composition
    overall = [z for stage, _, _, z in events if stage == "overall"]
    frozen_steps = int(0.5 * 5)
    assert comp.frozen.any() and not comp.frozen.all()
    for k in range(1, frozen_steps + 1):  # the latents after step k-1 are comp[k] in frozen cells
        z = overall[k - 1]
        assert torch.equal(z[..., comp.frozen], comp.latents[k][..., comp.frozen])
        for i, run in enumerate(result.objects):
            owned = comp.owner == i + 1
            assert torch.equal(z[..., owned], run.trajectory[k][..., owned])
    # After the frozen steps the foreground is denoised freely.
    last = overall[-1]
    assert not torch.equal(last[..., comp.frozen], comp.latents[-1][..., comp.frozen])
    # Smaller masks are composed later, so they own their cells.
    sizes = [int(run.mask.sum()) for run in result.objects]
    small = int(np.argmin(sizes))
    overlap = result.objects[small].mask & result.objects[1 - small].mask
    assert (comp.owner[overlap] == small + 1).all()


def test_objects_move_by_whole_quanta_towards_their_boxes(two_object_run):
    _, result, _ = two_object_run
    for run in result.objects:
        dy, dx = run.offset
        assert isinstance(dy, int) and isinstance(dx, int)
        # The mask moved with the latents: the vacated band is outside it and invalid.
        assert not run.mask[~run.valid].any()
        assert run.valid.sum() == (32 - 8 * abs(dy)) * (32 - 8 * abs(dx))
        # Maps are kept for the steps the overall run guides (0..2 of 5), for the transfer loss.
        assert set(run.maps) == set(GUIDANCE_KEYS)
        for maps in run.maps.values():
            assert maps.shape[:2] == (3, 8)


def test_an_object_keeps_its_run_when_another_object_is_added(components, two_object_run):
    _, result, _ = two_object_run
    alone = LmdPipeline(components).lmd(
        build_spec(_layout(CAT), seed=7), steps=5, guidance_scale=7.5, height=256, width=256
    )
    cat_with_ball = next(r for r in result.objects if r.spec.id == 1)
    # Alone it runs in a batch of one, with the ball in a batch of two: the same run up to float
    # rounding (about 3e-5 on these latents of unit scale).
    assert torch.allclose(alone.objects[0].trajectory, cat_with_ball.trajectory, atol=1e-4)
    assert torch.equal(alone.objects[0].mask, cat_with_ball.mask)


def test_same_seed_same_image_different_seed_different_image(components_no_sam):
    pipe = LmdPipeline(components_no_sam)
    layout = _layout(CAT, BALL)

    def render(seed):
        result = pipe.lmd(build_spec(layout, seed), steps=4, guidance_scale=7.5, height=128, width=128)
        return np.asarray(result.image)

    first = render(5)
    assert np.array_equal(first, render(5))
    assert not np.array_equal(first, render(6))


def test_cancellation_stops_within_one_step(components):
    pipe = LmdPipeline(components)
    before = dict(components.unet.attn_processors)
    steps_seen = []
    with pytest.raises(CancelledError):
        pipe.lmd(
            build_spec(_layout(CAT, BALL), seed=1),
            steps=6,
            guidance_scale=7.5,
            height=128,
            width=128,
            on_step=lambda stage, step, total, z: steps_seen.append(step),
            should_cancel=lambda: len(steps_seen) >= 2,
        )
    assert steps_seen == [1, 2]
    assert all(components.unet.attn_processors[k] is v for k, v in before.items())


def test_latents_scheduler_steps_and_guidance_are_float32_on_half_precision_weights():
    """bfloat16 weights (float16 on CUDA): the UNet runs in its dtype, but the latents it is given
    come from float32 state, so every scheduler step and guidance update is float32 (the
    reference keeps float32 weights; its LMD+ autocasts over them)."""
    from dataclasses import replace

    from lmd_bot.diffusion.tiny import tiny_components

    c = tiny_components(seed=0, sam=False, gligen=False)
    half = replace(
        c,
        unet=c.unet.to(torch.bfloat16),
        vae=c.vae.to(torch.bfloat16),
        text_encoder=c.text_encoder.to(torch.bfloat16),
        dtype=torch.bfloat16,
    )
    result = LmdPipeline(half).lmd(
        build_spec(_layout(CAT), seed=5), steps=3, guidance_scale=7.5, height=128, width=128
    )
    assert result.latents.dtype == torch.float32
    assert result.objects[0].trajectory.dtype == torch.float32
    assert result.composition.latents.dtype == torch.float32
    assert result.stats.guided_passes > 0 and result.stats.guidance_nonfinite == 0
    assert torch.isfinite(result.latents).all()


def test_the_reference_sd_baseline_is_diffusers_stable_diffusion_with_pndm(components):
    """The benchmark's ``sd`` column as the reference made it: StableDiffusionPipeline with the
    checkpoint's PNDM scheduler and a generator on the device (the CPU here), float32."""
    from diffusers import PNDMScheduler

    pipe = LmdPipeline(components)
    steps = []
    ours, _ = pipe.plain(
        "a cat on a sofa",
        "blurry",
        seed=11,
        steps=4,
        guidance_scale=7.5,
        height=128,
        width=128,
        scheduler=pipe.reference_sd_scheduler(),
        noise_on_device=True,
        on_step=lambda stage, step, total, z: steps.append((step, total)),
    )
    pndm = PNDMScheduler.from_config(components.scheduler.config, skip_prk_steps=True)
    theirs = diffusers_sd(components, "a cat on a sofa", "blurry", 11, 4, 128, scheduler=pndm)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert steps[-1] == (5, 5)  # PNDM's PLMS schedule takes one UNet call more than asked
    ddim, _ = pipe.plain(
        "a cat on a sofa", "blurry", seed=11, steps=4, guidance_scale=7.5, height=128, width=128
    )
    assert not np.array_equal(np.asarray(ours), np.asarray(ddim))
