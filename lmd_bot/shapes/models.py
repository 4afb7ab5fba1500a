"""The shapes models: the product's own classes at sizes that train on two CPU cores.

- ``AutoencoderKL`` with two blocks: scale factor 2, so a 64 px image is a 32×32×4 latent. LMD
  guides the mid block (latent/8: 4×4 cells) and ``up_blocks.1`` (latent/4: 8×8); the attention
  mask layer ``down_blocks.2.attentions.1`` sees 8×8 (SD v1.5 at 512 px sees 8×8 / 16×16 there).
  With the usual 64 px / factor 8 they would be 1×1 and 2×2 cells: nothing to localise.
- ``UNet2DConditionModel`` with SD v1.x's block structure (three cross-attention down blocks, a
  plain fourth, the mirror image going up, two layers per block, eight heads): the same 16
  cross-attention layer names as SD v1.5.
- ``CLIPTextModel`` on the real CLIP tokenizer (``lmd_bot.diffusion.tiny.clip_tokenizer``): the
  same token ids, 77 padded positions.
- the GLIGEN UNet: the same UNet with ``attention_type="gated"`` (position net + gated fusers)
  sharing the base weights; only the fusers and the position net are trained.
- SD v1.5's DDIM/DDPM noise schedule (scaled linear, 0.00085 → 0.012, 1000 steps).
"""

from __future__ import annotations

import torch

from lmd_bot.shapes.world import IMAGE_SIZE

TEXT_DIM = 64
VAE_FACTOR = 2
LATENT_SIZE = IMAGE_SIZE // VAE_FACTOR
UNET_CHANNELS = (32, 64, 64, 64)
HEADS = (1, 2, 8, 8)


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def unet_config(*, gated: bool = False) -> dict:
    config = {
        "sample_size": LATENT_SIZE,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "block_out_channels": UNET_CHANNELS,
        "layers_per_block": 2,
        # Read as head counts (SD v1 style). LMD's layers (mid block, up_blocks.1, down_blocks.2)
        # have SD v1.5's eight heads; the 32x32 and 16x16 levels have one and two, which makes
        # their self-attention 8x and 4x cheaper: the difference between training here or not.
        "attention_head_dim": HEADS,
        "cross_attention_dim": TEXT_DIM,
        "norm_num_groups": 32,
    }
    if gated:
        config["attention_type"] = "gated"
    return config


def new_unet(seed: int, *, gated: bool = False):
    from diffusers import UNet2DConditionModel

    return _seeded(seed, lambda: UNet2DConditionModel(**unet_config(gated=gated)))


def new_vae(seed: int):
    from diffusers import AutoencoderKL

    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * VAE_FACTOR,
            up_block_types=("UpDecoderBlock2D",) * VAE_FACTOR,
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=16,
            sample_size=IMAGE_SIZE,
            mid_block_add_attention=False,  # flat shapes need no global attention; it costs most
        ),
    )


def new_text_encoder(seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=TEXT_DIM,
        intermediate_size=4 * TEXT_DIM,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=77,
        projection_dim=TEXT_DIM,
    )
    return _seeded(seed, lambda: CLIPTextModel(config))


def noise_schedule():
    """SD v1.5's training schedule (DDPM) — the product samples it with DDIM."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
