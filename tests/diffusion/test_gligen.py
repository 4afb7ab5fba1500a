"""GLIGEN on the tiny gated UNet: grounding inputs, the unconditional half, scheduled sampling, fast."""

import numpy as np
import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense

from lmd_bot.diffusion.gligen import MAX_OBJECTS, grounding_inputs, with_unconditional
from lmd_bot.diffusion.guidance import GuidanceParams
from lmd_bot.diffusion.pipeline import FastParams, LmdPipeline
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.errors import CancelledError
from lmd_bot.layout.schema import SceneLayout
from tests.diffusion.helpers import diffusers_sd

CAT_LEFT = {"id": 1, "caption": "a gray cat", "box": [20, 250, 180, 200]}
CAT_RIGHT = {"id": 2, "caption": "a gray cat", "box": [300, 250, 180, 200]}
BALL = {"id": 3, "caption": "a red ball", "box": [200, 60, 120, 120]}


def _spec(*objects, seed=5):
    data = {"objects": list(objects), "background": "A garden", "negative": "dogs"}
    return build_spec(SceneLayout.model_validate(data), seed)


def _fast(components, beta, *, guided=False):
    guidance = FastParams().guidance if guided else GuidanceParams(max_index_step=0)
    return LmdPipeline(components, fast=FastParams(gligen_beta=beta, guidance=guidance))


def _fusers(unet):
    return [m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense)]


def test_every_box_is_grounded_by_its_overall_phrase_with_pooled_clip_features(components):
    spec = _spec(CAT_LEFT, CAT_RIGHT, BALL)
    pipe = LmdPipeline(components)
    grounding = pipe.blocks.scene_grounding(spec)
    assert grounding["boxes"].shape == (1, MAX_OBJECTS, 4)
    assert grounding["masks"][0].tolist() == [1.0] * 3 + [0.0] * (MAX_OBJECTS - 3)
    # Objects in spec order (caption, then id): the two cats, then the ball; boxes normalized xyxy.
    assert [o.id for o in spec.objects] == [1, 2, 3]
    assert torch.allclose(grounding["boxes"][0, 0], torch.tensor([20 / 512, 250 / 512, 200 / 512, 450 / 512]))

    def pooled(text):
        ids = components.tokenizer(text, return_tensors="pt").input_ids
        return components.text_encoder(ids).pooler_output[0]

    features = grounding["positive_embeddings"][0]
    with torch.no_grad():
        assert torch.allclose(features[0], pooled("two gray cats"))  # each cat box: the merged phrase
        assert torch.allclose(features[1], pooled("two gray cats"))
        assert torch.allclose(features[2], pooled("a red ball"))
    assert not features[3:].any()


def test_grounding_inputs_refuse_more_than_thirty_boxes():
    boxes = [[(0.0, 0.0, 0.1, 0.1)] * 31]
    with pytest.raises(ValueError, match="30 slots"):
        grounding_inputs(boxes, [torch.zeros(31, 8)], device=torch.device("cpu"), dtype=torch.float32)


def test_the_unconditional_half_sees_only_null_grounding_tokens(components):
    pipe = LmdPipeline(components)
    here = pipe.blocks.scene_grounding(_spec(CAT_LEFT, BALL))
    dog = {**CAT_LEFT, "box": [300, 20, 150, 150], "caption": "a dog"}
    elsewhere = pipe.blocks.scene_grounding(_spec(dog, BALL))
    cfg = with_unconditional(here)
    assert not cfg["masks"][0].any() and cfg["masks"][1].sum() == 2
    assert torch.equal(cfg["boxes"][1], here["boxes"][0])

    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g)

    def run(grounding):
        with torch.no_grad():
            return components.gligen_unet(
                torch.cat([latents] * 2),
                500,
                encoder_hidden_states=text,
                cross_attention_kwargs={"gligen": with_unconditional(grounding)},
            ).sample

    a, b = run(here), run(elsewhere)
    assert torch.equal(a[0], b[0])  # the unconditional half ignores boxes and phrases
    assert not torch.allclose(a[1], b[1])  # the conditional half follows them


def test_beta_zero_is_plain_sd_on_the_same_unet(components):
    spec = _spec(CAT_LEFT, BALL)
    ours = _fast(components, 0.0).fast(spec, steps=3, guidance_scale=7.5, height=128, width=128)
    theirs = diffusers_sd(components, spec.prompt, spec.negative, 5, 3, 128, unet=components.gligen_unet)
    assert np.array_equal(np.asarray(ours.image), np.asarray(theirs))
    grounded = _fast(components, 1.0).fast(spec, steps=3, guidance_scale=7.5, height=128, width=128)
    assert not np.array_equal(np.asarray(grounded.image), np.asarray(theirs))


def test_fusers_run_for_exactly_the_scheduled_steps_and_are_restored(components):
    spec = _spec(CAT_LEFT, BALL)
    fuser = _fusers(components.gligen_unet)[0]  # every UNet call runs each fuser once
    flags = []
    hook = fuser.register_forward_pre_hook(lambda module, args: flags.append(module.enabled))

    def trajectory(beta):
        flags.clear()
        latents = []
        _fast(components, beta).fast(
            spec,
            steps=5,
            guidance_scale=7.5,
            height=128,
            width=128,
            on_step=lambda stage, step, total, z: latents.append(z.clone()),
        )
        return latents, list(flags)

    try:
        always, always_flags = trajectory(1.0)
        scheduled, scheduled_flags = trajectory(0.4)
    finally:
        hook.remove()
    assert always_flags == [True] * 5
    assert scheduled_flags == [True, True, False, False, False]  # int(0.4 * 5) = 2 steps
    for step in range(2):  # grounded steps: the same as grounding throughout
        assert torch.equal(scheduled[step], always[step])
    assert not torch.allclose(scheduled[2], always[2])
    assert all(f.enabled for f in _fusers(components.gligen_unet))


def test_fuser_flags_are_restored_after_a_cancelled_run(components):
    steps_seen = []
    with pytest.raises(CancelledError):
        _fast(components, 1.0).fast(
            _spec(BALL),
            steps=4,
            guidance_scale=7.5,
            height=128,
            width=128,
            on_step=lambda stage, step, total, z: steps_seen.append(step),
            should_cancel=lambda: len(steps_seen) >= 3,  # stops at a step where the fusers are off
        )
    fusers = _fusers(components.gligen_unet)
    assert fusers and all(f.enabled for f in fusers)


def test_fast_guides_the_boxes_in_one_grounded_pass(components):
    spec = _spec(CAT_LEFT, CAT_RIGHT, BALL)
    before = dict(components.gligen_unet.attn_processors)
    size = {"height": 128, "width": 128}
    result = _fast(components, 0.4, guided=True).fast(spec, steps=4, guidance_scale=7.5, **size)
    assert all(components.gligen_unet.attn_processors[k] is v for k, v in before.items())
    assert result.objects == [] and result.composition is None
    assert result.stats.unet_forwards == 4 and result.stats.object_runs == 0
    assert result.stats.guided_passes >= 1 and result.overall_losses
    unguided = _fast(components, 0.4).fast(spec, steps=4, guidance_scale=7.5, **size)
    assert not torch.equal(result.latents, unguided.latents)
