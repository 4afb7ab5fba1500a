"""The models a render needs, and the choice of device and dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmd_bot.diffusion.masks import SamParts
from lmd_bot.errors import ConfigError


@dataclass
class Components:
    """SD v1.x parts (diffusers/transformers objects) plus an optional SAM, on one device."""

    unet: object  # diffusers UNet2DConditionModel
    vae: object  # diffusers AutoencoderKL
    text_encoder: object  # transformers CLIPTextModel
    tokenizer: object  # transformers CLIPTokenizer
    scheduler: object  # diffusers DDIMScheduler
    sam: SamParts | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        # Inference only: no parameter needs a gradient (guidance differentiates the latents), and
        # without them autograd keeps no weight-gradient buffers.
        models = [self.unet, self.vae, self.text_encoder] + ([self.sam.model] if self.sam else [])
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
    """``auto``: float16 on CUDA (half the memory, the usual SD inference dtype), else float32."""
    if preference == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if preference == "float16" and device.type == "cpu":
        raise ConfigError(
            "diffusion.dtype float16 is not supported on the CPU; use float32 or bfloat16 "
            "(LMD_DIFFUSION__DTYPE)."
        )
    return getattr(torch, preference)
