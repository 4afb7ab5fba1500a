"""The box energy (docs/method.md, "Box energy") and the attention-transfer loss ("Attention transfer").

Maps come from :class:`lmd_bot.diffusion.attention.AttentionStore`: ``(batch, heads, h, w,
tokens)`` per layer, one row per guided sample. Boxes are normalized ``(x0, y0, x1, y1)`` and are
rasterized on each layer's own grid with the reference's rounding
(:func:`lmd_bot.layout.geometry.nbox_to_grid_rect`).

Both losses **sum over heads** as the reference does (8 heads in SD v1), which is what its
threshold of 5.0 is calibrated for (docs/method.md, "Box energy").

:class:`LayoutLoss` computes every row's loss at once, vectorised over layers, phrases, tokens and
boxes: one gather, one top-k and a few reductions per layer grid, where the reference loops over
layers, phrases and tokens (hundreds of small operations per guidance pass on a GPU). Everything
that does not change from call to call is prepared once, on the maps' device: the box masks, each
phrase's top-k sizes (plain integers, computed on the CPU from the boxes), the gather indices and
the stacked reference maps. A call reads nothing back to the host.

Sums run in another order than the reference's loops, so values agree with them to float
rounding (about 1e-7 relative), and gradients are the same.
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


@dataclass(frozen=True)
class LossTerms:
    """One call's loss, term by term, for the rows it was given (in that order).

    ``energy[l, p]``: the energy of phrase ``p`` (rows' phrases one after another) on layer ``l``
    (the maps' key order); ``transfer[l, j]``: the transfer loss of box ``j`` (rows' phrases'
    boxes one after another), unweighted; ``total[r]``: row ``r``'s loss, the reference's
    normalization: ``(sum of energies + sum over boxes of weight * transfer / n_boxes(phrase))``
    over ``n_phrases * n_layers``.
    """

    energy: torch.Tensor
    transfer: torch.Tensor
    total: torch.Tensor


def _top_k_mean(values: torch.Tensor, k: torch.Tensor, k_max: int) -> torch.Tensor:
    """Mean of the ``k[i]`` largest entries of ``values[i, ..., :]``: ``values`` is ``(n, ..., m)``."""
    top = values.topk(k_max, dim=-1).values  # sorted, largest first
    keep = torch.arange(k_max, device=values.device) < k[:, None]  # (n, k_max)
    keep = keep.view(keep.shape[0], *([1] * (top.ndim - 2)), k_max).to(top.dtype)
    return (top * keep).sum(dim=-1) / k.view(-1, *([1] * (top.ndim - 2))).to(top.dtype)


@dataclass(frozen=True)
class _Grid:
    """What one layer grid needs, on the device: masks and top-k sizes per token of a phrase."""

    token_masks: torch.Tensor  # (tokens, h*w): the phrase's union mask, per (phrase, token) pair
    k_fg: torch.Tensor  # (tokens,)
    k_bg: torch.Tensor
    k_fg_max: int
    k_bg_max: int
    box_masks: torch.Tensor | None  # (boxes, 1, h*w), the boxes with references; None: none


@dataclass(frozen=True)
class _Rows:
    """Gather indices for one set of rows (a guidance step's active rows), on the device."""

    token_rows: torch.Tensor  # batch position of each (phrase, token) pair
    token_ids: torch.Tensor  # its token
    token_phrase: torch.Tensor  # its phrase, numbered over the given rows
    phrase_tokens: torch.Tensor  # tokens per phrase
    phrase_row: torch.Tensor  # batch position of each phrase
    phrase_count: torch.Tensor  # phrases per batch position
    box_rows: torch.Tensor  # batch position of each box with a reference
    box_words: torch.Tensor  # the word token of the box's phrase
    box_weight: torch.Tensor  # transfer weight / boxes of its phrase
    phrases: list[tuple[int, int]]  # (row, phrase index in the row)
    boxes: list[tuple[int, int, int]]  # (row, phrase index, box index), boxes with references


class LayoutLoss:
    """The guidance loss of a batch of samples: row ``r`` of the maps is guided by ``rows[r]``'s
    phrases (energy) and, where they carry references, by the transfer loss of their boxes."""

    def __init__(
        self,
        rows: Sequence[Sequence[PhraseTarget]],
        weights: EnergyWeights,
        *,
        transfer_weight: float = 2.0,
    ) -> None:
        if not rows or any(not phrases for phrases in rows):
            raise ValueError("every guided row needs at least one phrase")
        for phrases in rows:
            for phrase in phrases:
                if not phrase.positions or not phrase.boxes:
                    raise ValueError("a guided phrase needs at least one token and one box")
                if phrase.references and len(phrase.references) != len(phrase.boxes):
                    raise ValueError(f"{len(phrase.boxes)} boxes but {len(phrase.references)} references")
        self.rows = [list(phrases) for phrases in rows]
        self.weights = weights
        self.transfer_weight = transfer_weight
        self._grids: dict[tuple, _Grid] = {}
        self._indices: dict[tuple, _Rows] = {}
        self._references: dict[tuple, torch.Tensor] = {}

    def __call__(
        self, maps: Mapping[str, torch.Tensor], step_index: int = 0, rows: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Each row's loss, ``(batch,)``; ``rows``: which rows the maps' batch holds (default all)."""
        return self.terms(maps, step_index, rows).total

    def terms(
        self, maps: Mapping[str, torch.Tensor], step_index: int = 0, rows: Sequence[int] | None = None
    ) -> LossTerms:
        if not maps:
            raise ValueError("the layout loss needs at least one attention map")
        rows = tuple(range(len(self.rows))) if rows is None else tuple(rows)
        first = next(iter(maps.values()))
        if first.shape[0] != len(rows):
            raise ValueError(f"maps hold {first.shape[0]} rows, expected {len(rows)}")
        device = first.device
        ix = self._rows(rows, device)
        # Layers on the same grid (SD's three 16x16 up-block layers) go through one set of operations.
        grids: dict[tuple[int, int], list[str]] = {}
        for key, layer_maps in maps.items():
            grids.setdefault(tuple(layer_maps.shape[2:4]), []).append(key)
        energies, transfers = {}, {}
        for (h, w), keys in grids.items():
            grid = self._grid(rows, h, w, device)
            heads = first.shape[1]
            # (pairs, layers, heads, h*w): each (phrase, token) pair's maps from its own row.
            a = torch.stack([maps[key][ix.token_rows, :, :, :, ix.token_ids] for key in keys], dim=1)
            a = a.reshape(len(ix.token_ids), len(keys), heads, h * w).float()
            m = grid.token_masks[:, None, None, :]
            fg = (1 - _top_k_mean(a * m, grid.k_fg, grid.k_fg_max)).sum(dim=-1)
            bg = _top_k_mean(a * (1 - m), grid.k_bg, grid.k_bg_max).sum(dim=-1)
            per_token = fg * self.weights.fg_weight + bg * self.weights.bg_weight  # (pairs, layers)
            energy = per_token.new_zeros(len(ix.phrases), len(keys)).index_add(0, ix.token_phrase, per_token)
            energy = energy / ix.phrase_tokens[:, None]
            energies.update(zip(keys, energy.unbind(dim=1), strict=True))
            if ix.boxes:
                word = torch.stack([maps[key][ix.box_rows, :, :, :, ix.box_words] for key in keys], dim=1)
                word = word.reshape(len(ix.boxes), len(keys), heads, h * w).float()
                reference = torch.stack([self._reference(rows, key, device) for key in keys], dim=2)
                mask = grid.box_masks[:, None]  # (boxes, 1, 1, h*w)
                a = word * mask
                r = reference[:, step_index] * mask
                a = a / (a.sum(dim=-1, keepdim=True) + 1e-5)
                r = r / (r.sum(dim=-1, keepdim=True) + 1e-5)
                transfer = (a - r).abs().sum(dim=-1).mean(dim=-1)  # (boxes, layers)
                transfers.update(zip(keys, transfer.unbind(dim=1), strict=True))
        energy = torch.stack([energies[key] for key in maps])  # (layers, phrases)
        total = torch.zeros(len(rows), device=device).index_add(0, ix.phrase_row, energy.sum(dim=0))
        if ix.boxes:
            transfer = torch.stack([transfers[key] for key in maps])  # (layers, boxes)
            total = total.index_add(0, ix.box_rows, transfer.sum(dim=0) * ix.box_weight)
        else:
            transfer = energy.new_zeros(len(maps), 0)
        total = total / (ix.phrase_count * len(maps))
        return LossTerms(energy=energy, transfer=transfer, total=total)

    # --- prepared once per set of rows and grid -----------------------------------------------------

    def _rows(self, rows: tuple[int, ...], device) -> _Rows:
        key = (rows, str(device))
        if key not in self._indices:
            token_rows, token_ids, token_phrase, phrase_tokens, phrase_row, phrase_count = (
                [],
                [],
                [],
                [],
                [],
                [],
            )
            box_rows, box_words, box_weight, phrases, boxes = [], [], [], [], []
            for position, row in enumerate(rows):
                phrase_count.append(len(self.rows[row]))
                for p, phrase in enumerate(self.rows[row]):
                    for token in phrase.positions:
                        token_rows.append(position)
                        token_ids.append(token)
                        token_phrase.append(len(phrases))
                    phrase_tokens.append(len(phrase.positions))
                    phrase_row.append(position)
                    phrases.append((row, p))
                    for b in range(len(phrase.references)):
                        box_rows.append(position)
                        box_words.append(phrase.word_position)
                        box_weight.append(self.transfer_weight / len(phrase.boxes))
                        boxes.append((row, p, b))

            def tensor(values, dtype=torch.long):
                return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

            self._indices[key] = _Rows(
                token_rows=tensor(token_rows),
                token_ids=tensor(token_ids),
                token_phrase=tensor(token_phrase),
                phrase_tokens=tensor(phrase_tokens, torch.float32),
                phrase_row=tensor(phrase_row),
                phrase_count=tensor(phrase_count, torch.float32),
                box_rows=tensor(box_rows),
                box_words=tensor(box_words),
                box_weight=tensor(box_weight, torch.float32),
                phrases=phrases,
                boxes=boxes,
            )
        return self._indices[key]

    def _grid(self, rows: tuple[int, ...], h: int, w: int, device) -> _Grid:
        key = (rows, h, w, str(device))
        if key not in self._grids:
            token_masks, k_fg, k_bg, box_masks = [], [], [], []
            for row in rows:
                for phrase in self.rows[row]:
                    mask = box_mask(phrase.boxes, h, w).reshape(-1)
                    # Sizes from the boxes, on the CPU, once: the reference's floor(p * n), at least 1.
                    inside = int(mask.sum())
                    for _ in phrase.positions:
                        token_masks.append(mask)
                        k_fg.append(max(1, int(self.weights.fg_top_p * inside)))
                        k_bg.append(max(1, int(self.weights.bg_top_p * (h * w - inside))))
                    if phrase.references:
                        box_masks += [box_mask([nbox], h, w).reshape(1, -1) for nbox in phrase.boxes]
            boxes = torch.stack(box_masks).to(device, non_blocking=True) if box_masks else None
            self._grids[key] = _Grid(
                token_masks=torch.stack(token_masks).to(device, non_blocking=True),
                k_fg=torch.tensor(k_fg).to(device, non_blocking=True),
                k_bg=torch.tensor(k_bg).to(device, non_blocking=True),
                k_fg_max=max(k_fg),
                k_bg_max=max(k_bg),
                box_masks=boxes,
            )
        return self._grids[key]

    def _reference(self, rows: tuple[int, ...], layer: str, device) -> torch.Tensor:
        """The boxes' reference maps on ``layer``: ``(boxes, steps, heads, h*w)`` in float32."""
        key = (rows, layer, str(device))
        if key not in self._references:
            stacked = [
                phrase.references[b][layer].flatten(-2)
                for row in rows
                for phrase in self.rows[row]
                for b in range(len(phrase.references))
            ]
            self._references[key] = torch.stack(stacked).to(device, torch.float32)
        return self._references[key]
