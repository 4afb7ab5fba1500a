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

:func:`probe_position`: whether the visual tokens a fuser sees know where they are, which a fuser
needs to send a box's phrase to the tokens inside the box: per fuser, the share of the variance
of each token's x and y that a ridge regression from its features explains on held-out scenes,
over the whole picture and in its interior (away from the zero padding at the edges).
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
    original = unet.attn_processors
    store = install_capture(unet)
    sums: dict[str, list[np.ndarray]] = {}
    try:
        for seed in seeds:
            scene = sample_scene(seed)
            if not scene.phrases:
                continue
            enc = tokenizer(scene.caption, padding="max_length", max_length=77, return_tensors="pt")
            ids = enc.input_ids
            n_text = int(enc.attention_mask.sum())  # BOS + words + first EOS
            object_masks = torch.from_numpy(masks(scene)).float()
            with torch.no_grad():
                states = text_encoder(ids)[0]
                z0 = _encoded(scene, vae)
                for t in timesteps:
                    noisy, _ = _noised(z0, t, seed + t)
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

    errors: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for seed in seeds:
            scene = sample_scene(seed)
            if not scene.objects:
                continue
            ids = tokenizer(scene.caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
            states = text_encoder(ids)[0]
            z0 = _encoded(scene, vae)
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
                noisy, noise = _noised(z0, t, seed + t)
                for boxes, inputs in given.items():
                    kwargs = {"gligen": inputs}
                    pred = gligen_unet(noisy, torch.tensor([t]), states, cross_attention_kwargs=kwargs).sample
                    errors[boxes].append(float(((pred - noise) ** 2).mean()))
    gates = [
        float(p.detach().tanh().abs().mean()) for n, p in gligen_unet.named_parameters() if ".alpha_" in n
    ]
    return GligenProbe(float(np.mean(errors[True])), float(np.mean(errors[False])), float(np.mean(gates)))


@dataclass(frozen=True)
class PositionProbe:
    layer: str  # the transformer block whose fuser reads these features
    side: int
    r2: float  # variance of (x, y) explained, mean of the two, held-out scenes
    r2_interior: float  # the same for tokens in the middle 60% of the picture each way


def position_r2(features: np.ndarray, *, ridge: float = 1e-2) -> tuple[float, float]:
    """``features``: ``(scenes, side * side, channels)`` of one layer, tokens in raster order. A
    ridge regression from a token's features to its (x, y), fitted on the first two thirds of the
    scenes and scored on the rest: R² over all tokens and over the interior ones (below 0: worse
    than knowing nothing)."""
    n, hw, ch = features.shape
    side = round(hw**0.5)
    ys, xs = np.mgrid[0:side, 0:side]
    where = np.stack([xs.ravel(), ys.ravel()], 1) / max(side - 1, 1)
    fit = max(1, n * 2 // 3)
    design = np.concatenate([features.reshape(n * hw, ch), np.ones((n * hw, 1))], 1)
    targets = np.tile(where, (n, 1))
    train, test = slice(0, fit * hw), slice(fit * hw, None)
    weights = np.linalg.solve(
        design[train].T @ design[train] + ridge * np.eye(ch + 1), design[train].T @ targets[train]
    )
    predicted, truth = design[test] @ weights, targets[test]
    middle = np.tile(((where > 0.2) & (where < 0.8)).all(1), n - fit)

    def r2(rows) -> float:
        residual = ((predicted[rows] - truth[rows]) ** 2).sum(0)
        spread = ((truth[rows] - truth[rows].mean(0)) ** 2).sum(0)
        return float((1 - residual / np.maximum(spread, 1e-12)).mean())

    return r2(slice(None)), r2(middle)


def probe_position(
    gligen_unet, vae, text_encoder, tokenizer, *, timestep=600, seeds=PROBE_SEEDS
) -> list[PositionProbe]:
    from lmd_bot.diffusion.gligen import grounding_inputs

    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in gligen_unet.named_modules():
        if getattr(module, "fuser", None) is not None:

            def keep(_module, args, kwargs, name=name):
                captured.setdefault(name, []).append((args[0] if args else kwargs["hidden_states"]).detach())

            hooks.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    no_boxes = grounding_inputs(
        [[]],
        [torch.zeros(0, text_encoder.config.hidden_size)],
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    try:
        with torch.no_grad():
            for seed in seeds:
                scene = sample_scene(seed)
                ids = tokenizer(
                    scene.caption, padding="max_length", max_length=77, return_tensors="pt"
                ).input_ids
                noisy, _ = _noised(_encoded(scene, vae), timestep, seed)
                kwargs = {"gligen": no_boxes}
                gligen_unet(
                    noisy, torch.tensor([timestep]), text_encoder(ids)[0], cross_attention_kwargs=kwargs
                )
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for layer, batches in captured.items():
        features = torch.cat(batches).float().numpy()
        r2, interior = position_r2(features)
        out.append(PositionProbe(layer, round(features.shape[1] ** 0.5), r2, interior))
    return out


def _encoded(scene, vae) -> torch.Tensor:
    """The scene's picture as the UNet's clean latents."""
    image = torch.from_numpy(render(scene)).permute(2, 0, 1)[None].float() / 127.5 - 1
    return vae.encode(image).latent_dist.mode() * vae.config.scaling_factor


def _noised(z0: torch.Tensor, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z0`` noised to timestep ``t`` with noise drawn from ``seed``; and that noise."""
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    a = _alphas()[t]
    return a.sqrt() * z0 + (1 - a).sqrt() * noise, noise


def _alphas() -> torch.Tensor:
    from lmd_bot.shapes.models import noise_schedule

    return noise_schedule().alphas_cumprod
