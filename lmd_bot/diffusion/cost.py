"""A render's compute, independent of the hardware, in "sd units".

The :class:`CostMeter` counts the model calls a render really makes, with hooks on the real
modules (nothing re-derives the schedule): every UNet forward with its batch, told apart by whether
it ran to the end (a denoising pass) or was cut short after the last guidance layer (a guidance
pass, :class:`lmd_bot.diffusion.attention.StopForward`) and whether GLIGEN's fusers ran in it;
every backward from a guidance loss to the UNet's input; VAE decodes, SAM calls and text-encoder
calls (in 77-token sequences).

Each kind of call is weighted by its FLOPs on the full-size architectures (SD v1.5's UNet, VAE
and CLIP ViT-L/14 text encoder, GLIGEN's gated UNet, SAM ViT-B) at 512 px, one sample: the
:class:`FlopTable`. It is measured, not estimated, by torch's FLOP counter on models built on the
meta device (shapes only: no weights, no memory, no GPU), and committed as
``lmd_bot/assets/flops.json``; ``lmd-bot bench flops --write`` measures it again (after a
diffusers or transformers upgrade, say). One **sd unit** is plain SD at 50 steps: 50 CFG
forwards at batch 2, one VAE decode and the two text encodings (prompt and negative prompt).

Approximations, all small: a GLIGEN forward with grounding inputs but its fusers off counts as a
plain forward (its position net adds 0.06 of 803 GFLOPs); text-encoder calls count in proportion
to their tokens (GLIGEN's phrase features run on a few tokens, not 77); FLOPs per call assume
512 px whatever the size of the render (the counts do not depend on it). FLOPs are not seconds:
kernel launches, host syncs and memory traffic are not in them (``--full-size`` on a GPU measures
those).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

FLOP_TABLE_PATH = Path(__file__).resolve().parent.parent / "assets" / "flops.json"
REGENERATE = "lmd-bot bench flops --write"
TEXT_TOKENS = 77  # a text-encoder call of this many tokens is one TEXT_ENCODER unit
SD_STEPS = 50  # one sd unit: plain SD at this many steps


class CallKind(StrEnum):
    UNET = "unet"  # a whole UNet forward (denoising), fusers off
    UNET_FUSERS = "unet_fusers"  # a whole GLIGEN forward with its fusers on
    GUIDANCE_FORWARD = "guidance_forward"  # cut short after the last guidance layer
    GUIDANCE_FORWARD_FUSERS = "guidance_forward_fusers"
    GUIDANCE_BACKWARD = "guidance_backward"  # from the guidance maps to the latents
    GUIDANCE_BACKWARD_FUSERS = "guidance_backward_fusers"
    VAE_DECODE = "vae_decode"
    SAM = "sam"  # image encoder at 1024 px, prompt encoder, mask decoder
    TEXT_ENCODER = "text_encoder"  # one 77-token sequence


class FlopTable(BaseModel):
    """GFLOPs of one sample of each kind of call, full-size models at ``image_size`` px."""

    model_config = ConfigDict(frozen=True)

    image_size: int
    gflops: dict[CallKind, float]
    torch_version: str
    command: str = REGENERATE

    def sd_gflops(self) -> float:
        """One sd unit."""
        g = self.gflops
        return SD_STEPS * 2 * g[CallKind.UNET] + g[CallKind.VAE_DECODE] + 2 * g[CallKind.TEXT_ENCODER]

    def relative(self) -> dict[CallKind, float]:
        """Each kind in UNet forwards (the issue's and the docs' way of speaking about them)."""
        unet = self.gflops[CallKind.UNET]
        return {kind: value / unet for kind, value in self.gflops.items()}


def load_flop_table(path: Path = FLOP_TABLE_PATH) -> FlopTable:
    return FlopTable.model_validate(json.loads(path.read_text()))


@dataclass
class _Forward:
    batch: int
    fusers: bool
    complete: bool = False  # ran to the end; a guidance pass stops after its last layer


@dataclass
class CostMeter:
    """Counts model calls while :meth:`attach` is active; :meth:`samples` tallies them."""

    forwards: list[_Forward] = field(default_factory=list)
    backwards: list[_Forward] = field(default_factory=list)  # the forward each backward went through
    other: Counter[CallKind] = field(default_factory=Counter)

    def samples(self) -> Counter[CallKind]:
        """Samples per kind of call: a call at batch ``b`` counts ``b`` (text: 77-token sequences)."""
        out = Counter(self.other)
        for f in self.forwards:
            if f.complete:
                kind = CallKind.UNET_FUSERS if f.fusers else CallKind.UNET
            else:
                kind = CallKind.GUIDANCE_FORWARD_FUSERS if f.fusers else CallKind.GUIDANCE_FORWARD
            out[kind] += f.batch
        for f in self.backwards:
            if f.complete:
                raise ValueError("no FLOP figure for a backward through a whole UNet forward")
            out[CallKind.GUIDANCE_BACKWARD_FUSERS if f.fusers else CallKind.GUIDANCE_BACKWARD] += f.batch
        return out

    def gflops(self, table: FlopTable) -> float:
        return sum(n * table.gflops[kind] for kind, n in self.samples().items())

    def units(self, table: FlopTable) -> float:
        return self.gflops(table) / table.sd_gflops()

    def reset(self) -> None:
        self.forwards.clear()
        self.backwards.clear()
        self.other.clear()

    @contextlib.contextmanager
    def attach(self, components) -> Iterator[CostMeter]:
        """Count the calls of ``components``' models (a :class:`Components`) in the block."""
        handles = []
        try:
            for unet in (components.unet, components.gligen_unet):
                if unet is not None:
                    handles += self._hook_unet(unet)
            handles.append(components.vae.decoder.register_forward_pre_hook(self._count_decode))
            handles.append(
                components.text_encoder.register_forward_pre_hook(self._count_text, with_kwargs=True)
            )
            if components.sam is not None:
                sam = components.sam.model
                handles.append(sam.register_forward_pre_hook(self._count_sam, with_kwargs=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook_unet(self, unet) -> list:
        from diffusers.models.attention import GatedSelfAttentionDense

        fusers = [m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense)]

        def before(_module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            grounding = (kwargs.get("cross_attention_kwargs") or {}).get("gligen") is not None
            record = _Forward(batch=sample.shape[0], fusers=grounding and any(f.enabled for f in fusers))
            self.forwards.append(record)
            if sample.requires_grad:
                # Fires when a backward reaches the UNet's input, once per backward.
                sample.register_hook(lambda grad: self.backwards.append(record))

        def after(_module, _args, _kwargs, _output):
            self.forwards[-1].complete = True

        return [
            unet.register_forward_pre_hook(before, with_kwargs=True),
            unet.register_forward_hook(after, with_kwargs=True),
        ]

    def _count_decode(self, _module, args) -> None:
        self.other[CallKind.VAE_DECODE] += args[0].shape[0]

    def _count_text(self, _module, args, kwargs) -> None:
        ids = args[0] if args else kwargs["input_ids"]
        self.other[CallKind.TEXT_ENCODER] += ids.numel() / TEXT_TOKENS

    def _count_sam(self, _module, _args, kwargs) -> None:
        self.other[CallKind.SAM] += kwargs["pixel_values"].shape[0]


def measure_flop_table(image_size: int = 512) -> FlopTable:
    """FLOPs of every :class:`CallKind` on the full-size architectures built on the meta device.

    The guidance pass is measured through the project's own capture processors and
    :class:`StopForward`, so its cut-off point is the one renders use.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from lmd_bot.diffusion.attention import GUIDANCE_KEYS, StopForward, attention_capture
    from lmd_bot.diffusion.gligen import MAX_OBJECTS, fuser_switch
    from lmd_bot.diffusion.tiny import full_size_components

    def gflops(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / 1e9

    meta = torch.device("meta")
    c = full_size_components(meta, torch.float32)
    latent = image_size // c.vae_scale_factor
    z = torch.zeros(1, c.unet.config.in_channels, latent, latent, device=meta)
    t = torch.tensor(999, device=meta)
    text = torch.zeros(1, TEXT_TOKENS, c.unet.config.cross_attention_dim, device=meta)
    gligen = {
        "boxes": torch.zeros(1, MAX_OBJECTS, 4, device=meta),
        "positive_embeddings": torch.zeros(1, MAX_OBJECTS, c.unet.config.cross_attention_dim, device=meta),
        "masks": torch.ones(1, MAX_OBJECTS, device=meta),
    }
    table: dict[CallKind, float] = {}
    unet = c.gligen_unet
    with torch.no_grad(), fuser_switch(unet) as enable:
        enable(True)
        table[CallKind.UNET] = gflops(lambda: c.unet(z, t, encoder_hidden_states=text))
        table[CallKind.UNET_FUSERS] = gflops(
            lambda: unet(z, t, encoder_hidden_states=text, cross_attention_kwargs={"gligen": gligen})
        )
    with attention_capture(unet, GUIDANCE_KEYS, (latent, latent)) as store, fuser_switch(unet) as enable:
        for fusers, forward, backward in (
            (False, CallKind.GUIDANCE_FORWARD, CallKind.GUIDANCE_BACKWARD),
            (True, CallKind.GUIDANCE_FORWARD_FUSERS, CallKind.GUIDANCE_BACKWARD_FUSERS),
        ):
            enable(fusers)
            kwargs = {"cross_attention_kwargs": {"gligen": gligen}} if fusers else {}
            latents = z.clone().requires_grad_(True)
            with FlopCounterMode(display=False) as counter, torch.enable_grad():
                with store.guidance(GUIDANCE_KEYS) as maps, contextlib.suppress(StopForward):
                    unet(latents, t, encoder_hidden_states=text, **kwargs)
                if maps.keys() != set(GUIDANCE_KEYS):
                    raise RuntimeError("the guidance pass did not record every guidance layer")
                loss = sum(m.sum() for m in maps.values())
            table[forward] = counter.get_total_flops() / 1e9
            table[backward] = gflops(lambda: torch.autograd.grad(loss, latents))  # noqa: B023 - called at once
    with torch.no_grad():
        table[CallKind.VAE_DECODE] = gflops(lambda: c.vae.decode(z))
        ids = torch.zeros(1, TEXT_TOKENS, dtype=torch.long, device=meta)
        table[CallKind.TEXT_ENCODER] = gflops(lambda: c.text_encoder(ids))
        sam_size = c.sam.model.config.vision_config.image_size
        pixels = torch.zeros(1, 3, sam_size, sam_size, device=meta)
        point = torch.zeros(1, 1, 1, 2, device=meta)
        table[CallKind.SAM] = gflops(
            lambda: c.sam.model(pixel_values=pixels, input_points=point, multimask_output=True)
        )
    return FlopTable(
        image_size=image_size,
        gflops={kind: round(table[kind], 3) for kind in CallKind},
        torch_version=torch.__version__,
    )
