"""How well the shapes UNet's cross-attention localises, at the layers LMD reads.

For held-out scenes, noised to a few timesteps, the UNet runs on the product's 77 padded tokens.
Per layer: each phrase token's share of attention inside its object's mask, divided by the mask's
share of the picture (1.0 = no localisation; the issue's aim is 3 or more), and how much of the
attention inside the masks goes to the phrase's tokens versus the end-of-text and padding tokens.
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


def _alphas() -> torch.Tensor:
    from lmd_bot.shapes.models import noise_schedule

    return noise_schedule().alphas_cumprod
