"""The layout loss as it was before it was vectorised: loops over layers, phrases, tokens and boxes,
written as docs/method.md ("Box energy", "Attention transfer") states it. The tests' oracle for
:class:`lmd_bot.diffusion.losses.LayoutLoss`, term by term."""

from collections.abc import Mapping, Sequence

import torch

from lmd_bot.diffusion.losses import EnergyWeights, PhraseTarget, box_mask


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
