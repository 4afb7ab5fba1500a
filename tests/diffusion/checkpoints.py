"""Community-style files written from the tiny models: a single-file checkpoint in the original
Stable Diffusion (LDM) layout, as people download them, and a LoRA in diffusers' format.

The single-file writer renames diffusers' weights to the original repository's names (the reverse
of what diffusers' ``from_single_file`` does), for SD v1.x's block structure with two layers per
block, which the tiny UNet has.
"""

from __future__ import annotations

from pathlib import Path

import torch


def _unet_names(unet) -> dict[str, str]:
    """diffusers prefix -> LDM prefix for the UNet's blocks (SD v1.x structure, 2 layers a block)."""
    layers = unet.config.layers_per_block
    names = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for i, block in enumerate(unet.down_blocks):
        for j in range(layers):
            names[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{i * (layers + 1) + j + 1}.0"
            if getattr(block, "attentions", None):
                names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{i * (layers + 1) + j + 1}.1"
        if block.downsamplers:
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
    for i, block in enumerate(unet.up_blocks):
        attentions = bool(getattr(block, "attentions", None))
        for j in range(layers + 1):
            names[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (layers + 1) + j}.0"
            if attentions:
                names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (layers + 1) + j}.1"
        if block.upsamplers:
            names[f"up_blocks.{i}.upsamplers.0.conv"] = (
                f"output_blocks.{i * (layers + 1) + layers}.{2 if attentions else 1}.conv"
            )
    return names


_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, prefixes: dict[str, str], inner: dict[str, str]) -> str | None:
    for prefix, target in prefixes.items():
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1 :]
            for a, b in inner.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
                    break
            return f"{target}.{rest}"
    return None


def _unet_state(unet) -> dict[str, torch.Tensor]:
    names = _unet_names(unet)
    out = {}
    for key, value in unet.state_dict().items():
        renamed = _rename(key, names, _UNET_RESNET if ".resnets." in key else {})
        if renamed is None:
            raise ValueError(f"no LDM name for UNet weight {key}")
        out["model.diffusion_model." + renamed] = value
    return out


def _vae_state(vae) -> dict[str, torch.Tensor]:
    count = len(vae.config.block_out_channels)
    names = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        names |= {
            f"{part}.conv_in": f"{part}.conv_in",
            f"{part}.conv_out": f"{part}.conv_out",
            f"{part}.conv_norm_out": f"{part}.norm_out",
            f"{part}.mid_block.resnets.0": f"{part}.mid.block_1",
            f"{part}.mid_block.resnets.1": f"{part}.mid.block_2",
            f"{part}.mid_block.attentions.0": f"{part}.mid.attn_1",
        }
    for i in range(count):
        for j in range(vae.config.layers_per_block):
            names[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        names[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        up = count - 1 - i  # the original numbers decoder blocks from the output side
        for j in range(vae.config.layers_per_block + 1):
            names[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{up}.block.{j}"
        names[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{up}.upsample.conv"
    out = {}
    for key, value in vae.state_dict().items():
        attention = ".attentions." in key
        renamed = _rename(key, names, _VAE_ATTENTION if attention else _VAE_RESNET)
        if renamed is None:
            raise ValueError(f"no LDM name for VAE weight {key}")
        if attention and value.ndim == 2:  # the original's attention projections are 1x1 convs
            value = value[:, :, None, None]
        out["first_stage_model." + renamed] = value
    return out


def write_single_file(components, path: Path) -> Path:
    """The tiny SD parts as one ``.safetensors`` file in the original LDM layout."""
    from safetensors.torch import save_file

    state = _unet_state(components.unet) | _vae_state(components.vae)
    for key, value in components.text_encoder.state_dict().items():
        # transformers 5 names the weights without the ``text_model.`` the original file has.
        key = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_config_folder(components, folder: Path) -> Path:
    """The configs (no weights) a single-file checkpoint of the tiny model needs, in diffusers'
    layout: what ``diffusion.sd_config`` points at offline."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    components.unet.save_config(folder / "unet")
    components.vae.save_config(folder / "vae")
    components.text_encoder.config.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_config(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def write_lora(unet, folder: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A LoRA on the UNet's attention projections with random (non-zero) weights, saved the way
    diffusers' training scripts save one (``pytorch_lora_weights.safetensors``)."""
    import copy

    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    target = copy.deepcopy(unet)
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        target.add_adapter(config)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(target), safe_serialization=True
    )
    return folder / "pytorch_lora_weights.safetensors"
