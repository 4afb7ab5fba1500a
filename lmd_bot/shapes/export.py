"""Exporting a training checkpoint as the folders ``diffusion.sd_model`` / ``gligen_model`` load.

``{out}/sd`` is an SD v1.x checkpoint in diffusers' layout (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) and ``{out}/gligen`` holds the GLIGEN UNet (``unet/``), base weights
included, as GLIGEN's own checkpoint does. Weights are the EMA ones, stored as float16
safetensors (they load as float32 on the CPU); the VAE keeps float32, it is small and colours
matter. ``{out}/TRAINING.md`` records where they came from: seed, steps, the command, the figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from lmd_bot.shapes import models
from lmd_bot.shapes.train import (
    CheckpointError,
    Trainer,
    adapter_parameters,
    read_checkpoint,
    tie_base_weights,
)

SD_DIR = "sd"
GLIGEN_DIR = "gligen"


def _zero_untrained_tokens(text_encoder, initial) -> int:
    """Zero the embeddings of tokens training never saw (still at their random initial values:
    with no gradient AdamW leaves them untouched). They meant nothing either way; zeros say so, and
    the committed file compresses from 6 MB to the few rows the world uses."""
    table = text_encoder.get_input_embeddings().weight
    start = initial.get_input_embeddings().weight
    with torch.no_grad():
        untouched = (table == start).all(1)
        table[untouched] = 0.0
    return int((~untouched).sum())


def export_checkpoint(checkpoint: Path, out_dir: Path, *, command: str = "", ema: bool = True) -> dict:
    """Write ``out_dir/sd`` and ``out_dir/gligen`` from ``checkpoint``; returns the training facts.

    ``ema=False`` exports the live weights instead of their moving average (early in a run the
    average lags far behind)."""
    from lmd_bot.diffusion.tiny import clip_tokenizer, ddim_scheduler

    payload = read_checkpoint(checkpoint)
    state = payload["state"]
    if state["phase"] not in ("joint", "adapters") or not payload["ema"]:
        phase, step = state["phase"], state["step"]
        raise ValueError(f"{checkpoint} has no trained UNet yet (phase {phase!r}, step {step})")
    seed = state["config"]["seed"]
    vae = models.new_vae(seed)
    vae.load_state_dict(payload["vae"])
    vae.register_to_config(scaling_factor=state["vae_scaling"])
    unet = models.new_unet(seed + 1)
    unet.load_state_dict(payload["ema"]["unet"] if ema else payload["unet"])
    text_encoder = models.new_text_encoder(seed + 2)
    text_encoder.load_state_dict(payload["ema"]["text_encoder"] if ema else payload["text_encoder"])
    _zero_untrained_tokens(text_encoder, models.new_text_encoder(seed + 2))
    gligen = models.new_unet(seed + 3, gated=True)
    if payload["gligen"] is not None:
        gligen.load_state_dict(payload["gligen"])
    tie_base_weights(gligen, unet)
    with torch.no_grad():
        if ema:
            averaged = list(payload["ema"]["adapters"].values())
            for p, e in zip(adapter_parameters(gligen), averaged, strict=True):
                p.copy_(e)

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    sd = staging / SD_DIR
    unet.to(torch.float16).save_pretrained(sd / "unet")
    vae.save_pretrained(sd / "vae")
    text_encoder.to(torch.float16).save_pretrained(sd / "text_encoder")
    clip_tokenizer().save_pretrained(sd / "tokenizer")
    ddim_scheduler().save_pretrained(sd / "scheduler")
    # An untied copy: save_pretrained refuses tensors shared between modules of one model.
    gligen_copy = models.new_unet(seed + 3, gated=True)
    gligen_copy.load_state_dict({k: v.detach().clone() for k, v in gligen.state_dict().items()})
    gligen_copy.to(torch.float16).save_pretrained(staging / GLIGEN_DIR / "unet")
    history = state["history"]
    facts = {
        "checkpoint": str(checkpoint),
        "seed": seed,
        "vae_steps": state["config"]["vae_steps"],
        "joint_steps_done": state["step"] if state["phase"] == "joint" else state["config"]["joint_steps"],
        "adapter_steps_done": state["step"] if state["phase"] == "adapters" else 0,
        "config": state["config"],
        "vae_scaling": state["vae_scaling"],
        "notes": state["notes"],
        "last_losses": {k: round(v[-1][1], 5) for k, v in history.items() if v},
        "weights": "EMA" if ema else "live",
        "command": command,
    }
    (staging / "training.json").write_text(json.dumps(facts, indent=2), encoding="utf-8")
    if out_dir.exists():
        keep = out_dir / "README.md"
        if keep.exists():
            shutil.copyfile(keep, staging / "README.md")
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return facts


def start_from_export(trainer: Trainer, folder: Path) -> None:
    """Write ``trainer``'s first checkpoint from an export in ``folder``: the joint phase at step 0
    on its weights (VAE and its scaling, base, adapters) with fresh optimizers, the moving
    averages starting at those weights. Another recipe (the auxiliary losses of
    :mod:`lmd_bot.shapes.auxiliary`) can so fine-tune the committed models without their run."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    if not (folder / SD_DIR / "unet").is_dir() or not (folder / GLIGEN_DIR / "unet").is_dir():
        needs = f"{SD_DIR}/ and {GLIGEN_DIR}/"
        raise CheckpointError(f"--init {folder} is no export: it needs {needs} (lmd-bot shapes export)")
    vae = AutoencoderKL.from_pretrained(folder / SD_DIR / "vae")
    trainer.vae.load_state_dict(vae.float().state_dict())
    trainer.state.vae_scaling = float(vae.config.scaling_factor)
    trainer.vae.config.scaling_factor = trainer.state.vae_scaling
    unet = UNet2DConditionModel.from_pretrained(folder / SD_DIR / "unet")
    trainer.unet.load_state_dict(unet.float().state_dict())
    text_encoder = CLIPTextModel.from_pretrained(folder / SD_DIR / "text_encoder")
    trainer.text_encoder.load_state_dict(text_encoder.float().state_dict())
    trainer._begin_phase("joint", fresh=True)
    exported = dict(UNet2DConditionModel.from_pretrained(folder / GLIGEN_DIR / "unet").named_parameters())
    with torch.no_grad():
        for name, p in trainer.gligen.named_parameters():
            if ".fuser." in name or name.startswith("position_net."):
                p.copy_(exported[name].float())
        for e, p in zip(trainer.ema["adapters"], adapter_parameters(trainer.gligen), strict=True):
            e.copy_(p)
    trainer.state.notes.append(f"started from the export in {folder}")
    trainer.save()
