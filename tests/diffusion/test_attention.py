"""Attention capture on the tiny SD-structured UNet: only the named layers, restored after use."""

import contextlib

import pytest
import torch

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY, StopForward, attention_capture


def _inputs(batch=1, size=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, 4, size, size, generator=g), torch.randn(batch, 77, 32, generator=g)


def test_capture_touches_only_the_named_layers_and_restores_them(components):
    unet = components.unet
    before = dict(unet.attn_processors)
    with attention_capture(unet, [SAM_KEY, *GUIDANCE_KEYS], (16, 16)):
        during = unet.attn_processors
        changed = {k for k in before if during[k] is not before[k]}
        assert changed == {f"{k}.processor" for k in (SAM_KEY, *GUIDANCE_KEYS)}
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_processors_are_restored_when_the_block_raises(components):
    unet = components.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError), attention_capture(unet, GUIDANCE_KEYS, (16, 16)):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is before[k] for k in before)


def test_idle_capture_processors_leave_the_output_unchanged(components):
    latents, text = _inputs()
    with torch.no_grad():
        plain = components.unet(latents, 500, encoder_hidden_states=text).sample
        with attention_capture(components.unet, [SAM_KEY, *GUIDANCE_KEYS], (16, 16)):
            idle = components.unet(latents, 500, encoder_hidden_states=text).sample
    assert torch.equal(plain, idle)


def test_recording_one_token_per_row_matches_the_full_maps(components):
    latents, text = _inputs(batch=3)
    keys = [SAM_KEY, *GUIDANCE_KEYS]
    with torch.no_grad():
        plain = components.unet(latents, 500, encoder_hidden_states=text).sample
        with attention_capture(components.unet, keys, (16, 16)) as store:
            with store.tokens(keys, rows=[2, 0], tokens=[3, 5]) as maps:
                out = components.unet(latents, 500, encoder_hidden_states=text).sample
            with store.guidance(keys) as full, contextlib.suppress(StopForward):
                components.unet(latents, 500, encoder_hidden_states=text)
            with store.tokens([], rows=[], tokens=[]) as nothing:
                components.unet(latents, 500, encoder_hidden_states=text)
    # Explicit softmax attention computes the same output as SDPA, up to rounding.
    assert torch.allclose(out, plain, atol=1e-5)
    assert set(maps) == set(keys) and not nothing
    assert maps[SAM_KEY].shape == (2, 8, 4, 4)  # 2 rows, 8 heads, 16x16 latent / 4
    assert maps[GUIDANCE_KEYS[0]].shape == (2, 8, 2, 2)  # the mid block
    for key in keys:
        assert torch.allclose(maps[key][0], full[key][2, ..., 3])  # row 2's token 3
        assert torch.allclose(maps[key][1], full[key][0, ..., 5])  # row 0's token 5
    assert not maps[SAM_KEY].requires_grad


def test_guidance_recording_keeps_gradients_and_stops_after_the_last_layer(components):
    latents, text = _inputs()
    latents.requires_grad_(True)
    with (
        attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store,
        store.guidance(GUIDANCE_KEYS) as maps,
        pytest.raises(StopForward),
    ):
        components.unet(latents, 500, encoder_hidden_states=text)
    assert set(maps) == set(GUIDANCE_KEYS)
    full = maps[GUIDANCE_KEYS[1]]
    assert full.shape == (1, 8, 4, 4, 77)  # the whole batch, every token
    assert torch.allclose(full.sum(dim=-1), torch.ones(1, 8, 4, 4), atol=1e-5)  # softmax over 77 tokens
    (grad,) = torch.autograd.grad(full[..., 2].sum(), latents)
    assert grad.abs().sum() > 0
