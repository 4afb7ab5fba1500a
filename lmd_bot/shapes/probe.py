"""How well the shapes models ground: the UNet's cross-attention at the layers LMD reads, and
whether GLIGEN's adapters use the boxes they are given.

For held-out scenes, noised to a few timesteps, the UNet runs on the product's 77 padded tokens.
Per layer: each phrase token's share of attention inside its object's mask, divided by the mask's
share of the picture (1.0 = no localisation; the issue's aim is 3 or more), and how much of the
attention inside the masks goes to the phrase's tokens versus the end-of-text and padding tokens.

:func:`probe_gligen`: the gated UNet's denoising error with every object's box and caption as
GLIGEN inputs, against the same with none (only the null grounding tokens). Boxes that tell the
adapters where things are lower the error; a ratio of 1.0 means the fusers ignore them, and then
``lmd+``'s per-object runs (GLIGEN, no guidance) put their object wherever the base would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY
from lmd_bot.diffusion.spec import Span
from lmd_bot.diffusion.tokens import token_span
from lmd_bot.shapes.grounding import install_capture
from lmd_bot.shapes.world import masks, render, sample_scene

PROBE_SEEDS = range(30_000_000, 30_000_048)


@dataclass(frozen=True)
class LayerProbe:
    layer: str
    side: int
    share_ratio: float  # in-mask attention share / mask area share, mean over phrase tokens
    phrase_mass_in_mask: float  # mean over in-mask cells of the phrase tokens' summed probability
    padding_mass_in_mask: float  # the same for end-of-text + padding tokens


def probe_attention(
    unet, vae, text_encoder, tokenizer, *, timesteps=(200, 500), seeds=PROBE_SEEDS
) -> list[LayerProbe]:
    scheduler_alphas = _alphas()
    original = unet.attn_processors
    store = install_capture(unet)
    sums: dict[str, list[np.ndarray]] = {}
    try:
        for seed in seeds:
            scene = sample_scene(seed)
            if not scene.phrases:
                continue
            image = torch.from_numpy(render(scene)).permute(2, 0, 1)[None].float() / 127.5 - 1
            enc = tokenizer(scene.caption, padding="max_length", max_length=77, return_tensors="pt")
            ids = enc.input_ids
            n_text = int(enc.attention_mask.sum())  # BOS + words + first EOS
            object_masks = torch.from_numpy(masks(scene)).float()
            with torch.no_grad():
                states = text_encoder(ids)[0]
                z0 = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
                for t in timesteps:
                    gen = torch.Generator().manual_seed(seed + t)
                    a = scheduler_alphas[t]
                    noisy = a.sqrt() * z0 + (1 - a).sqrt() * torch.randn(z0.shape, generator=gen)
                    unet(noisy, torch.tensor([t]), states)
                    for layer in (*GUIDANCE_KEYS, SAM_KEY):
                        p = store[layer][0].mean(0)  # (HW, 77)
                        side = int(p.shape[0] ** 0.5)
                        for phrase in scene.phrases:
                            span = token_span(
                                tokenizer, scene.caption, Span(start=phrase.start, end=phrase.end)
                            )
                            m = object_masks[list(phrase.objects)].amax(0)[None, None]
                            m = F.adaptive_avg_pool2d(m, side).flatten()
                            area = float(m.mean())
                            pos = list(span.positions)
                            shares = (p[:, pos] * m[:, None]).sum(0) / p[:, pos].sum(0)
                            inside = m > 0.5
                            phrase_mass = (
                                p[:, pos].sum(1)[inside].mean() if inside.any() else torch.tensor(0.0)
                            )
                            pad_mass = (
                                p[:, n_text - 1 :].sum(1)[inside].mean()
                                if inside.any()
                                else torch.tensor(0.0)
                            )
                            sums.setdefault(layer, []).append(
                                np.array(
                                    [
                                        float(shares.mean()) / max(area, 1e-6),
                                        float(phrase_mass),
                                        float(pad_mass),
                                        side,
                                    ]
                                )
                            )
                    store.clear()
    finally:
        unet.set_attn_processor(original)
    out = []
    for layer, rows in sums.items():
        arr = np.stack(rows)
        out.append(
            LayerProbe(
                layer,
                int(arr[0, 3]),
                float(arr[:, 0].mean()),
                float(arr[:, 1].mean()),
                float(arr[:, 2].mean()),
            )
        )
    return out


@dataclass(frozen=True)
class GligenProbe:
    error_with_boxes: float  # mean squared epsilon error, every object's box and caption given
    error_without: float  # the same inputs with no boxes (the null grounding tokens)
    gate: float  # mean |tanh(alpha)| of the fusers' gates: how open they are (0: closed)

    @property
    def gain(self) -> float:
        """Error without boxes / with them: 1.0 = the boxes change nothing."""
        return self.error_without / max(self.error_with_boxes, 1e-12)


def probe_gligen(
    gligen_unet, vae, text_encoder, tokenizer, *, timesteps=(500, 700), seeds=PROBE_SEEDS
) -> GligenProbe:
    from lmd_bot.diffusion.gligen import grounding_inputs

    alphas = _alphas()
    errors: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for seed in seeds:
            scene = sample_scene(seed)
            if not scene.objects:
                continue
            image = torch.from_numpy(render(scene)).permute(2, 0, 1)[None].float() / 127.5 - 1
            ids = tokenizer(scene.caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
            states = text_encoder(ids)[0]
            z0 = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor
            # The per-object caption's pooled feature, as the product's per-object runs give it.
            features = torch.cat(
                [
                    text_encoder(tokenizer(o.caption(), return_tensors="pt").input_ids).pooler_output
                    for o in scene.objects
                ]
            )
            given = {
                True: grounding_inputs(
                    [[o.nbox for o in scene.objects]], [features], device=z0.device, dtype=z0.dtype
                ),
                False: grounding_inputs([[]], [features[:0]], device=z0.device, dtype=z0.dtype),
            }
            for t in timesteps:
                gen = torch.Generator().manual_seed(seed + t)
                noise = torch.randn(z0.shape, generator=gen)
                a = alphas[t]
                noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
                for boxes, inputs in given.items():
                    kwargs = {"gligen": inputs}
                    pred = gligen_unet(noisy, torch.tensor([t]), states, cross_attention_kwargs=kwargs).sample
                    errors[boxes].append(float(((pred - noise) ** 2).mean()))
    gates = [
        float(p.detach().tanh().abs().mean()) for n, p in gligen_unet.named_parameters() if ".alpha_" in n
    ]
    return GligenProbe(float(np.mean(errors[True])), float(np.mean(errors[False])), float(np.mean(gates)))


def _alphas() -> torch.Tensor:
    from lmd_bot.shapes.models import noise_schedule

    return noise_schedule().alphas_cumprod
