"""Loading real checkpoints: the only place in lmd-bot that calls ``from_pretrained``.

``diffusion.sd_model`` is a hub id or a local directory in diffusers' layout (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``); its scheduler config is read as DDIM, as the
reference does. ``diffusion.sam_model`` is a hub id or a directory in transformers' layout. Hub
downloads are cached by huggingface_hub (``HF_HOME``); with ``HF_HUB_OFFLINE=1`` only the cache
and local directories are used. ``sd_model`` may also be one original-layout ``.safetensors``
checkpoint (community fine-tunes), its architecture read from ``diffusion.sd_config``, and
``diffusion.loras`` are fused into it at load time (:func:`apply_loras`; docs/models.md).

``diffusion.gligen_model`` is GLIGEN's text-box checkpoint in diffusers' layout (the ``lmd+`` and
``fast`` modes), optionally pinned to a hub revision as ``owner/name@commit``; only its ``unet/``
is loaded, as a UNet with ``attention_type="gated"``: GLIGEN is built on SD v1.4, whose VAE and
CLIP text encoder are SD v1.5's, so SD's are shared. The default is diffusers' converted
checkpoint, which stock diffusers loads as it is; the GLIGEN fork's config style, which the LMD
reference loads, is translated, and anything that would come out without fusers is refused (see
:func:`load_gligen_unet`). An empty ``gligen_model`` skips it (those modes then refuse clearly).

SAM is optional: when it is disabled, or fails to load, masks come from the attention maps and a
warning is logged. SAM always runs in float32 (one call per object; half precision buys nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lmd_bot.config import DiffusionSettings, LoraSettings
from lmd_bot.diffusion.components import Components, select_device, select_dtype
from lmd_bot.diffusion.masks import SamParts
from lmd_bot.errors import ConfigError

log = logging.getLogger(__name__)


def load_components(settings: DiffusionSettings) -> Components:
    """SD v1.x (and SAM, if enabled) from ``settings``, on the configured device and dtype."""
    device = select_device(settings.device)
    dtype = select_dtype(settings.dtype, device)
    source = settings.sd_model
    log.info("loading Stable Diffusion from %s (%s, %s)", source, device, dtype)
    try:
        if is_single_file(source):
            parts = _load_single_file(source, settings.sd_config, dtype)
        else:
            parts = _load_folder(source, dtype)
    except Exception as exc:  # hub, file-system and format errors all mean "can't use this model"
        raise ConfigError(
            f"cannot load the Stable Diffusion model {source!r} (diffusion.sd_model, "
            f"LMD_DIFFUSION__SD_MODEL): {exc}",
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    unet, vae, text_encoder, tokenizer, scheduler = parts
    if "mid_block.attentions.0.transformer_blocks.0.attn2.processor" not in unet.attn_processors:
        raise ConfigError(f"{source!r} is not an SD v1.x-style UNet: LMD needs its mid-block cross-attention")
    if settings.loras:
        apply_loras(unet, vae, text_encoder, tokenizer, scheduler, settings.loras)
    gligen_unet = load_gligen_unet(settings.gligen_model, dtype) if settings.gligen_model else None
    sd_identity = source + "".join(f"+{lora.path}*{lora.weight:g}" for lora in settings.loras)
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
        sd_name=f"{sd_identity}@{dtype}",
        # GLIGEN reads the prompt through SD's text encoder, which a checkpoint or LoRA may change.
        gligen_name=f"{settings.gligen_model}+{sd_identity}@{dtype}",
    )


def is_single_file(source: str) -> bool:
    """Whether ``diffusion.sd_model`` names one checkpoint file (a path or a URL) rather than a
    diffusers-layout folder or hub repository."""
    return source.lower().endswith((".safetensors", ".ckpt", ".pt", ".bin"))


def _load_folder(source: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return (
        UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype),
        AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype),
        CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype),
        CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", model_max_length=77),
        DDIMScheduler.from_pretrained(source, subfolder="scheduler"),
    )


def _load_single_file(source: str, config: str, dtype: torch.dtype):
    """UNet, VAE and text encoder from one checkpoint in the original SD layout (as community
    fine-tunes are shared), converted by diffusers' ``from_single_file``.

    Only ``.safetensors`` is read: ``.ckpt`` files are pickles, which can run code when loaded.
    The file holds weights only; the architecture comes from ``config`` (``diffusion.sd_config``),
    a diffusers-layout folder or hub id with the configs and tokenizer of the model the checkpoint
    was fine-tuned from. Empty, diffusers infers it from the weights and fetches those configs from
    the hub (or its cache) -- so offline, point it at a local folder (docs/models.md).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if not source.lower().endswith(".safetensors"):
        raise ValueError(
            "only .safetensors checkpoints are loaded (a .ckpt/.pt/.bin file is a pickle, which can "
            "run code); convert it to .safetensors first"
        )
    pipe = StableDiffusionPipeline.from_single_file(
        source,
        config=config or None,
        torch_dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # The checkpoint's scheduler config is read as DDIM, as for a folder.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.tokenizer.model_max_length = 77
    return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler


def apply_loras(unet, vae, text_encoder, tokenizer, scheduler, loras: list[LoraSettings]) -> None:
    """Load each LoRA with diffusers' own loader, weight it, and fuse them all into the SD UNet
    (and the text encoder, for LoRAs that train it).

    Fused, the models are plain diffusers/transformers models again: LMD's attention processors
    and the per-object cache see ordinary weights, and a render costs what it did without LoRAs.
    GLIGEN's UNet is separate and left alone; the text encoder is shared with it.
    """
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    names = []
    for i, lora in enumerate(loras):
        log.info("loading LoRA %s at weight %g", lora.path, lora.weight)
        try:
            pipe.load_lora_weights(lora.path, adapter_name=f"lora{i}")
        except Exception as exc:  # missing file, another model's LoRA, no peft: all unusable
            raise ConfigError(
                f"cannot load the LoRA {lora.path!r} (diffusion.loras[{i}], LMD_DIFFUSION__LORAS): "
                f"{exc}. It must be an SD v1.x LoRA (.safetensors, diffusers' or kohya's format)",
                user_message="The image model could not be loaded; the bot's operator has been told why.",
            ) from exc
        names.append(f"lora{i}")
    pipe.set_adapters(names, [lora.weight for lora in loras])
    pipe.fuse_lora(components=["unet", "text_encoder"])
    pipe.unload_lora_weights()


def split_revision(source: str) -> tuple[str, str | None]:
    """``"owner/name@revision"`` -> ``("owner/name", "revision")``; a local path or a bare id has
    no revision. The revision travels with the id, so changing the model never keeps a pin that
    belongs to another repository."""
    if "@" in source and not Path(source).exists():
        name, revision = source.rsplit("@", 1)
        return name, revision or None
    return source, None


def gligen_unet_config(config: dict) -> dict:
    """The UNet config stock diffusers needs to build GLIGEN's gated layers from ``config``.

    Two styles exist: diffusers' own (``attention_type: "gated"``, the converted checkpoints of its
    GLIGEN pipeline) and the one of the GLIGEN authors' diffusers fork, which the LMD reference
    loads (``use_gated_attention: true``). Their weights have the same names (``position_net.*``,
    ``*.fuser.*``), so the fork's map once the flag is translated. Anything else is refused: stock
    diffusers would silently build a UNet without fusers from it.
    """
    if config.get("attention_type") == "gated":
        return {}
    if config.get("use_gated_attention") and config.get("attention_type", "default") == "default":
        return {"attention_type": "gated"}
    raise ValueError(
        f"its UNet config has attention_type {config.get('attention_type', 'default')!r} and no "
        "use_gated_attention flag: it is not a GLIGEN text-box UNet"
    )


def check_fusers(unet, missing_keys: list[str]) -> None:
    """Refuse a GLIGEN UNet whose grounding layers are absent, or were not in the checkpoint
    (diffusers only warns and leaves them randomly initialized)."""
    from diffusers.models.attention import GatedSelfAttentionDense

    from lmd_bot.diffusion.gligen import is_gligen_unet

    fusers = [m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense)]
    if not is_gligen_unet(unet) or not fusers:
        raise ValueError("the loaded UNet has no position net or no gated fusers")
    grounding = [k for k in missing_keys if k.startswith("position_net.") or ".fuser." in k]
    if grounding:
        raise ValueError(
            f"the checkpoint lacks {len(grounding)} GLIGEN weights (e.g. {grounding[0]}): its weight "
            "names do not map onto diffusers' gated UNet"
        )


def load_gligen_unet(source: str, dtype: torch.dtype):
    """GLIGEN's gated UNet from a diffusers-layout checkpoint (its ``unet/`` folder), in either
    config style (:func:`gligen_unet_config`), checked to have its fusers (:func:`check_fusers`).
    ``source`` may pin a hub revision: ``owner/name@commit``."""
    from diffusers import UNet2DConditionModel

    name, revision = split_revision(source)
    log.info("loading the GLIGEN UNet from %s (revision %s, %s)", name, revision or "latest", dtype)
    setting = 'diffusion.gligen_model, LMD_DIFFUSION__GLIGEN_MODEL; set it to "" to run without lmd+ and fast'
    try:
        config = UNet2DConditionModel.load_config(name, subfolder="unet", revision=revision)
    except Exception as exc:  # hub, file-system and format errors all mean "can't use this model"
        raise ConfigError(
            f"cannot load the GLIGEN model {source!r} ({setting}): {exc}",
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    try:
        overrides = gligen_unet_config(config)
        unet, info = UNet2DConditionModel.from_pretrained(
            name,
            subfolder="unet",
            revision=revision,
            torch_dtype=dtype,
            output_loading_info=True,
            **overrides,
        )
        check_fusers(unet, info["missing_keys"])
    except Exception as exc:
        raise ConfigError(
            f"{source!r} ({setting}) is not a GLIGEN UNet that stock diffusers can load with its "
            f"fusers: {exc}. Supported: diffusers' converted GLIGEN text-box checkpoints "
            "(attention_type 'gated', e.g. masterful/gligen-1-4-generation-text-box) and the GLIGEN "
            "fork's (use_gated_attention, e.g. gligen/diffusers-generation-text-box)",
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    return unet


def load_sam(source: str, device: torch.device) -> SamParts | None:
    """transformers' SAM and its processor, or ``None`` (logged) when they cannot be loaded.

    float16 weights on CUDA (half the memory and time; the reference runs it under float16
    autocast there anyway), float32 elsewhere."""
    from transformers import SamModel, SamProcessor

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        model = SamModel.from_pretrained(source, torch_dtype=dtype).to(device)
        processor = SamProcessor.from_pretrained(source)
    except Exception as exc:  # SAM only refines masks: carry on without it
        log.warning(
            "SAM %r could not be loaded (%s); object masks will come from attention maps", source, exc
        )
        return None
    return SamParts(model=model, processor=processor, name=source)


# Below this much free GPU memory the refiner (about 6 GB in float16) is kept on the CPU and moved
# to the GPU one model at a time, as the reference runs it (model CPU offload).
REFINER_RESIDENT_BYTES = 10 * 2**30


def load_refiner(settings: DiffusionSettings, device: torch.device, dtype: torch.dtype):
    """The SDXL refiner (``diffusion.refiner_model``) as diffusers' img2img pipeline, on
    ``device``, or offloaded when the GPU has too little free memory for it to stay resident."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    source = settings.refiner_model
    log.info("loading the SDXL refiner from %s (%s, %s)", source, device, dtype)
    try:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(source, torch_dtype=dtype)
    except Exception as exc:  # hub, file-system and format errors all mean "can't use this model"
        raise ConfigError(
            f"cannot load the SDXL refiner {source!r} (diffusion.refiner_model, "
            f'LMD_DIFFUSION__REFINER_MODEL; or set diffusion.refine = "off"): {exc}',
            user_message="The image model could not be loaded; the bot's operator has been told why.",
        ) from exc
    if device.type == "cuda" and torch.cuda.mem_get_info(device)[0] < REFINER_RESIDENT_BYTES:
        log.info("little free GPU memory: the refiner is offloaded to the CPU between its steps")
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
