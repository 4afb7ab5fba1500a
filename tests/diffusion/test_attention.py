"""Attention capture on the tiny SD-structured UNet: only the named layers, restored after use."""

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


def test_recording_tokens_of_the_conditional_half(components):
    latents, text = _inputs(batch=2)
    with torch.no_grad():
        plain = components.unet(latents, 500, encoder_hidden_states=text).sample
        with attention_capture(components.unet, [SAM_KEY, *GUIDANCE_KEYS], (16, 16)) as store:
            with store.tokens([SAM_KEY, *GUIDANCE_KEYS], [3, 5], cond_index=1) as maps:
                out = components.unet(latents, 500, encoder_hidden_states=text).sample
            with store.guidance(GUIDANCE_KEYS):
                pass
    # Explicit softmax attention computes the same output as SDPA, up to rounding.
    assert torch.allclose(out, plain, atol=1e-5)
    assert set(maps) == {SAM_KEY, *GUIDANCE_KEYS}
    assert maps[SAM_KEY].shape == (8, 4, 4, 2)  # 8 heads, 16x16 latent / 4, two tokens
    assert maps[GUIDANCE_KEYS[0]].shape == (8, 2, 2, 2)  # the mid block
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
    assert full.shape == (8, 4, 4, 77)
    assert torch.allclose(full.sum(dim=-1), torch.ones(8, 4, 4), atol=1e-5)  # softmax over all 77 tokens
    (grad,) = torch.autograd.grad(full[..., 2].sum(), latents)
    assert grad.abs().sum() > 0
