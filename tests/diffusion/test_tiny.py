"""The random-weight builders other parts rely on: deterministic, SD v1.x-shaped."""

import torch

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY
from lmd_bot.diffusion.tiny import full_size_components, tiny_gligen_unet, tiny_unet

# The 16 cross-attention layers of SD v1.5's UNet, by diffusers name.
SD15_CROSS_ATTENTION = {
    *(f"down_blocks.{b}.attentions.{i}.transformer_blocks.0.attn2" for b in range(3) for i in range(2)),
    "mid_block.attentions.0.transformer_blocks.0.attn2",
    *(f"up_blocks.{b}.attentions.{i}.transformer_blocks.0.attn2" for b in (1, 2, 3) for i in range(3)),
}


def _cross_attention(unet):
    return {k.removesuffix(".processor") for k in unet.attn_processors if ".attn2." in k}


def test_tiny_unet_has_sd15_cross_attention_layers_and_is_deterministic(components):
    unet = components.unet
    assert _cross_attention(unet) == SD15_CROSS_ATTENTION
    assert {SAM_KEY, *GUIDANCE_KEYS} <= SD15_CROSS_ATTENTION
    assert all(unet.get_submodule(k).heads == 8 for k in SD15_CROSS_ATTENTION)
    again = tiny_unet(0)
    assert all(torch.equal(a, b) for a, b in zip(unet.parameters(), again.parameters(), strict=True))
    assert not torch.equal(next(tiny_unet(1).parameters()), next(again.parameters()))
    assert components.vae_scale_factor == 8


def test_builders_leave_the_global_rng_alone():
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    tiny_unet(0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_gligen_unet_is_grounded_by_boxes_and_phrases():
    unet = tiny_gligen_unet(0)
    assert _cross_attention(unet) == SD15_CROSS_ATTENTION
    g = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, 32, generator=g)
    masks = torch.zeros(1, 30)
    masks[0, 0] = 1

    def run(box):
        boxes = torch.zeros(1, 30, 4)
        boxes[0, 0] = torch.tensor(box)
        grounding = {
            "boxes": boxes,
            "positive_embeddings": torch.randn(1, 30, 32, generator=g),
            "masks": masks,
        }
        with torch.no_grad():
            return unet(
                latents, 500, encoder_hidden_states=text, cross_attention_kwargs={"gligen": grounding}
            )

    left, right = run([0.0, 0.0, 0.5, 1.0]).sample, run([0.5, 0.0, 1.0, 1.0]).sample
    assert not torch.allclose(left, right)


def test_full_size_builders_have_sd15_and_sam_vit_b_sizes():
    # On the meta device nothing is allocated: this checks the architectures, instantly.
    c = full_size_components(torch.device("meta"), torch.float16)

    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(c.unet) == 859_520_964  # SD v1.5's UNet
    assert count(c.vae) == 83_653_863  # SD v1.5's VAE
    assert count(c.text_encoder) == 123_060_480  # CLIP ViT-L/14's text encoder
    assert 93_000_000 < count(c.sam.model) < 94_000_000  # SAM ViT-B
    assert _cross_attention(c.unet) == SD15_CROSS_ATTENTION
