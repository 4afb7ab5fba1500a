"""Loading real checkpoints: the only place in lmd-bot that calls ``from_pretrained``.

``diffusion.sd_model`` is a hub id or a local directory in diffusers' layout (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``); its scheduler config is read as DDIM, as the
reference does. ``diffusion.sam_model`` is a hub id or a directory in transformers' layout. Hub
downloads are cached by huggingface_hub (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` only the cache
and local directories are used.

``diffusion.gligen_model`` is GLIGEN's text-box checkpoint in diffusers' layout (the ``lmd+`` and
``fast`` modes); only its ``unet/`` is loaded, a UNet with ``attention_type="gated"``: GLIGEN is
built on SD v1.4, whose VAE and CLIP text encoder are SD v1.5's, so SD's are shared. An empty
``gligen_model`` skips it (those modes then refuse clearly).

SAM is optional: when it is disabled, or fails to load, masks come from the attention maps and a
warning is logged. SAM always runs in float32 (one call per object; half precision buys nothing).
"""

from __future__ import annotations

import logging

import torch

from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.components import Components, select_device, select_dtype
from lmd_bot.diffusion.masks import SamParts
from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)


def load_components(settings: DiffusionSettings) -> Components:
    """SD v1.x (and SAM, if enabled) from ``settings``, on the configured device and dtype."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    device = select_device(settings.device)
    dtype = select_dtype(settings.dtype, device)
    source = settings.sd_model
    log.info("loading Stable Diffusion from %s (%s, %s)", source, device, dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", model_max_length=77)
        scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    except Exception as exc:  # hub, file-system and format errors all mean "can't use this model"
        raise ConfigError(
            f"cannot load the Stable Diffusion model {source!r} (diffusion.sd_model, "
            f"LMD_DIFFUSION__SD_MODEL): {exc}",
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    if "mid_block.attentions.0.transformer_blocks.0.attn2.processor" not in unet.attn_processors:
        raise ConfigError(f"{source!r} is not an SD v1.x-style UNet: LMD needs its mid-block cross-attention")
    gligen_unet = load_gligen_unet(settings.gligen_model, dtype) if settings.gligen_model else None
    return Components(
        unet=unet.to(device),
        vae=vae.to(device),
        text_encoder=text_encoder.to(device),
        tokenizer=tokenizer,
        scheduler=scheduler,
        sam=load_sam(settings.sam_model, device) if settings.use_sam else None,
        gligen_unet=gligen_unet.to(device) if gligen_unet is not None else None,
        device=device,
        dtype=dtype,
        sd_name=f"{source}@{dtype}",
        gligen_name=f"{settings.gligen_model}@{dtype}",
    )


def load_gligen_unet(source: str, dtype: torch.dtype):
    """GLIGEN's gated UNet from a diffusers checkpoint (its ``unet/`` folder)."""
    from diffusers import UNet2DConditionModel

    from lmd_bot.diffusion.gligen import is_gligen_unet

    log.info("loading the GLIGEN UNet from %s (%s)", source, dtype)
    try:
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
    except Exception as exc:  # hub, file-system and format errors all mean "can't use this model"
        raise ConfigError(
            f"cannot load the GLIGEN model {source!r} (diffusion.gligen_model, "
            f'LMD_DIFFUSION__GLIGEN_MODEL; set it to "" to run without lmd+ and fast): {exc}',
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    if not is_gligen_unet(unet):
        raise ConfigError(
            f"{source!r} (diffusion.gligen_model) is not a GLIGEN UNet: it has no position net "
            "(a UNet with attention_type 'gated' is needed)"
        )
    return unet


def load_sam(source: str, device: torch.device) -> SamParts | None:
    """transformers' SAM and its processor, or ``None`` (logged) when they cannot be loaded."""
    from transformers import SamModel, SamProcessor

    try:
        model = SamModel.from_pretrained(source, torch_dtype=torch.float32).to(device)
        processor = SamProcessor.from_pretrained(source)
    except Exception as exc:  # SAM only refines masks: carry on without it
        log.warning(
            "SAM %r could not be loaded (%s); object masks will come from attention maps", source, exc
        )
        return None
    return SamParts(model=model, processor=processor, name=source)
