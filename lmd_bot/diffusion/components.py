"""The models a render needs, and the choice of device and dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmd_bot.diffusion.masks import SamParts
from lmd_bot.errors import ConfigError


@dataclass
class Components:
    """SD v1.x parts (diffusers/transformers objects), optional GLIGEN UNet and SAM, on one device.

    The GLIGEN UNet (``lmd+`` and ``fast``) shares the VAE, text encoder and tokenizer: GLIGEN is
    built on SD v1.4, whose VAE and CLIP text encoder are SD v1.5's. The names identify the
    weights in the per-object cache's keys.
    """

    unet: object  # diffusers UNet2DConditionModel
    vae: object  # diffusers AutoencoderKL
    text_encoder: object  # transformers CLIPTextModel
    tokenizer: object  # transformers CLIPTokenizer
    scheduler: object  # diffusers DDIMScheduler
    sam: SamParts | None = None
    gligen_unet: object | None = None  # UNet2DConditionModel with attention_type="gated"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    sd_name: str = "sd"
    gligen_name: str = "gligen"

    def __post_init__(self) -> None:
        # Inference only: no parameter needs a gradient (guidance differentiates the latents), and
        # without them autograd keeps no weight-gradient buffers.
        models = [self.unet, self.vae, self.text_encoder] + ([self.sam.model] if self.sam else [])
        models += [self.gligen_unet] if self.gligen_unet is not None else []
        for model in models:
            model.requires_grad_(False)
            model.eval()

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def select_device(preference: str) -> torch.device:
    """``auto``: CUDA, then Apple MPS, then the CPU. An explicit choice must be available."""
    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if (preference == "cuda" and not cuda) or (preference == "mps" and not mps):
        raise ConfigError(
            f"diffusion.device is {preference!r} but this machine has no {preference.upper()} device; "
            "set LMD_DIFFUSION__DEVICE=auto or cpu."
        )
    return torch.device(preference)


def select_dtype(preference: str, device: torch.device) -> torch.dtype:
    """``auto``: float32, the reference's weights everywhere (on CUDA ``lmd+`` and ``fast`` then
    run under float16 autocast, as the reference's LMD+ does). ``float16`` halves the memory and
    the time, at the cost of numerics the published figures were not measured with."""
    if preference == "auto":
        return torch.float32
    if preference == "float16" and device.type == "cpu":
        raise ConfigError(
            "diffusion.dtype float16 is not supported on the CPU; use float32 or bfloat16 "
            "(LMD_DIFFUSION__DTYPE)."
        )
    return getattr(torch, preference)
