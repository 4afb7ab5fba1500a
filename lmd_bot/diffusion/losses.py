"""The box energy (docs/method.md, "Box energy") and the attention-transfer loss ("Attention transfer").

Maps come from :class:`lmd_bot.diffusion.attention.AttentionStore`: ``(heads, h, w, tokens)`` per
layer. Boxes are normalized ``(x0, y0, x1, y1)`` and are rasterized on each layer's own grid with
the reference's rounding (:func:`lmd_bot.layout.geometry.nbox_to_grid_rect`).

Both losses **sum over heads** as the reference does (8 heads in SD v1), which is what its
threshold of 5.0 is calibrated for (docs/method.md, "Box energy").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lmd_bot.layout.geometry import NBox, nbox_to_grid_rect


@dataclass(frozen=True)
class EnergyWeights:
    fg_top_p: float = 0.2
    bg_top_p: float = 0.2
    fg_weight: float = 1.0
    bg_weight: float = 4.0


@dataclass
class PhraseTarget:
    """One phrase to guide: its tokens and the boxes it should fill.

    ``references`` holds, per box, the per-object run's word-token maps for the attention transfer:
    ``{layer: (steps, heads, h, w)}``, already moved to the box's place. Empty: energy only.
    """

    positions: Sequence[int]
    word_position: int
    boxes: Sequence[NBox]
    references: Sequence[Mapping[str, torch.Tensor]] = field(default_factory=list)


def box_mask(boxes: Sequence[NBox], h: int, w: int, device=None) -> torch.Tensor:
    """The union of ``boxes`` rasterized on an ``h x w`` grid, as a float mask."""
    mask = torch.zeros(h, w, device=device)
    for nbox in boxes:
        r = nbox_to_grid_rect(nbox, h, w)
        mask[r.y0 : r.y1, r.x0 : r.x1] = 1.0
    return mask


def box_energy(
    maps: torch.Tensor, mask: torch.Tensor, positions: Sequence[int], weights: EnergyWeights
) -> torch.Tensor:
    """Energy of one phrase on one layer: ``maps`` is ``(heads, h, w, tokens)``, ``mask`` ``(h, w)``.

    For each token: ``sum_heads(1 - mean(topk(a * M)))`` pulls the strongest attention inside the
    box up and ``sum_heads(mean(topk(a * (1 - M))))`` pushes the strongest outside it down, with
    top-k over 20% of the cells inside (outside) the box; the result is averaged over the tokens.
    """
    heads = maps.shape[0]
    flat_mask = mask.reshape(-1).to(maps.device, torch.float32)
    inside = flat_mask.sum().item()
    k_fg = max(1, int(weights.fg_top_p * inside))
    k_bg = max(1, int(weights.bg_top_p * (flat_mask.numel() - inside)))
    total = maps.new_zeros((), dtype=torch.float32)
    for v in positions:
        a = maps[..., v].reshape(heads, -1).float()
        fg = (1 - (a * flat_mask).topk(k_fg, dim=1).values.mean(dim=1)).sum()
        bg = (a * (1 - flat_mask)).topk(k_bg, dim=1).values.mean(dim=1).sum()
        total = total + fg * weights.fg_weight + bg * weights.bg_weight
    return total / len(positions)


def transfer_loss(maps: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 distance between the normalized word-token maps inside one box, averaged over heads.

    ``maps`` and ``reference`` are ``(heads, h, w)``: the overall run's and the per-object run's.
    """
    heads = maps.shape[0]
    m = mask.reshape(1, -1).to(maps.device, torch.float32)
    a = maps.reshape(heads, -1).float() * m
    r = reference.reshape(heads, -1).to(maps.device, torch.float32) * m
    a = a / (a.sum(dim=1, keepdim=True) + 1e-5)
    r = r / (r.sum(dim=1, keepdim=True) + 1e-5)
    return (a - r).abs().sum(dim=1).mean()


def layout_loss(
    maps: Mapping[str, torch.Tensor],
    phrases: Sequence[PhraseTarget],
    weights: EnergyWeights,
    *,
    step_index: int = 0,
    transfer_weight: float = 2.0,
) -> torch.Tensor:
    """Energy over all phrases and layers, plus the transfer loss where references are given.

    ``(sum of energies + sum over boxes of transfer_weight * transfer / n_boxes(phrase))`` divided
    by ``n_phrases * n_layers``, the reference's normalization.
    """
    if not phrases or not maps:
        raise ValueError("layout_loss needs at least one phrase and one attention map")
    device = next(iter(maps.values())).device
    total = torch.zeros((), device=device)
    for layer_maps in maps.values():
        _, h, w, _ = layer_maps.shape
        for phrase in phrases:
            total = total + box_energy(layer_maps, box_mask(phrase.boxes, h, w), phrase.positions, weights)
    for phrase in phrases:
        if not phrase.references:
            continue
        for nbox, reference in zip(phrase.boxes, phrase.references, strict=True):
            obj_loss = torch.zeros((), device=device)
            for key, layer_maps in maps.items():
                _, h, w, _ = layer_maps.shape
                obj_loss = obj_loss + transfer_loss(
                    layer_maps[..., phrase.word_position],
                    reference[key][step_index],
                    box_mask([nbox], h, w),
                )
            total = total + transfer_weight * obj_loss / len(phrase.boxes)
    return total / (len(phrases) * len(maps))
