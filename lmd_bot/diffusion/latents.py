"""Initial noise, blending, quantized shifts and latent composition (docs/method.md,
"Per-object stage", "Alignment", "Composition").

Shapes: a latent is ``(1, C, h, w)``; a trajectory stacks the ``steps + 1`` latents of a run,
``(steps + 1, 1, C, h, w)``, from the initial noise to the final latent; masks are ``(h, w)`` bool.

Shifts are quantized to one cell of the mid-block attention map, **8 latent cells** (64 image
pixels for SD's VAE, 1/8 of a 512 canvas; docs/method.md, "Geometry"): 2 cells of a 16x16
attention map, 1 cell of the 8x8 mid-block map, so the latents and every saved attention map move
together by whole cells. A model with a smaller VAE factor has a smaller quantum in pixels (16 px
for the shapes world's factor 2, where 64 px would be its whole image and round every move away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmd_bot.layout.geometry import NBox, box_center, nbox_to_grid_rect

QUANTUM_LATENT_CELLS = 8  # the UNet's three downsamplings to the mid block


def shift_quantum_px(vae_scale_factor: int) -> int:
    """The shift quantum in image pixels for a VAE that downsamples by ``vae_scale_factor``."""
    return QUANTUM_LATENT_CELLS * vae_scale_factor


def draw_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal noise from ``seed``, drawn on the CPU in float32 (same on every device)."""
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(seed))


def blend_noise(
    background: torch.Tensor, own: torch.Tensor, mask: torch.Tensor, ratio: float
) -> torch.Tensor:
    """Background noise, with ``ratio`` of the object's own noise mixed in inside ``mask``.

    ``sqrt(1 - r) * z_bg + sqrt(r) * z_obj`` stays unit-variance, and outside the box the object
    run starts from exactly the background's noise, so object and background agree
    (docs/method.md, "Per-object stage").
    """
    m = mask.to(background.dtype)
    mixed = (1 - ratio) ** 0.5 * background + ratio**0.5 * own
    return background * (1 - m) + mixed * m


def rect_mask(nbox: NBox, h: int, w: int) -> torch.Tensor:
    r = nbox_to_grid_rect(nbox, h, w)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[r.y0 : r.y1, r.x0 : r.x1] = True
    return mask


def quantized_offset(
    mask: torch.Tensor, target: NBox, image_hw: tuple[int, int], quantum_px: int
) -> tuple[int, int]:
    """Shift ``(dy, dx)`` in quanta of ``quantum_px`` moving the mask's centroid to ``target``'s centre.

    The centroid is the reference's: the mean cell **index** over the grid size, half a cell
    above and left of the mean cell centre. It decides the rounding of about one object in ten;
    the published numbers were measured with it (docs/method.md, "Alignment").
    """
    h, w = mask.shape
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if rows.numel() == 0:
        return (0, 0)
    cy = rows.double().mean().item() / h
    cx = cols.double().mean().item() / w
    tx, ty = box_center(target)
    return (
        round((ty - cy) * image_hw[0] / quantum_px),
        round((tx - cx) * image_hw[1] / quantum_px),
    )


def box_offset(source: NBox, target: NBox, image_hw: tuple[int, int], quantum_px: int) -> tuple[int, int]:
    """Shift ``(dy, dx)`` in quanta of ``quantum_px`` moving ``source``'s centre nearest to ``target``'s.

    Used to reuse an object generated in place (LMD+) after its box moved: like LMD's alignment,
    it lands within half a quantum (32 px at 512 px) of the new place.
    """
    sx, sy = box_center(source)
    tx, ty = box_center(target)
    return (
        round((ty - sy) * image_hw[0] / quantum_px),
        round((tx - sx) * image_hw[1] / quantum_px),
    )


def shift(tensor: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the last two dimensions by ``(dy, dx)`` cells; vacated cells become zero."""
    h, w = tensor.shape[-2:]
    out = torch.zeros_like(tensor)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y, dst_y = slice(max(-dy, 0), h - max(dy, 0)), slice(max(dy, 0), h - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), w - max(dx, 0)), slice(max(dx, 0), w - max(-dx, 0))
    out[..., dst_y, dst_x] = tensor[..., src_y, src_x]
    return out


def shift_quanta(
    tensor: torch.Tensor,
    quanta: tuple[int, int],
    image_hw: tuple[int, int],
    quantum_px: int,
) -> torch.Tensor:
    """Shift a map of any grid by whole quanta of ``quantum_px`` (the grid must divide the image evenly)."""
    h, w = tensor.shape[-2:]
    cells_y = h * quantum_px // image_hw[0]
    cells_x = w * quantum_px // image_hw[1]
    return shift(tensor, quanta[0] * cells_y, quanta[1] * cells_x)


@dataclass
class Composition:
    latents: torch.Tensor  # (steps + 1, 1, C, h, w): composed latents, index 0 = initial noise
    frozen: torch.Tensor  # (h, w) bool: cells owned by an object
    owner: torch.Tensor  # (h, w) int: 0 background, i + 1 for the i-th trajectory


def compose(
    background: torch.Tensor,
    trajectories: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    valid: Sequence[torch.Tensor] | None = None,
) -> Composition:
    """Compose per-object trajectories over the background noise, the largest mask first.

    ``background`` is the overall run's initial latent ``(1, C, h, w)``. Two passes, in the
    reference's order: first every object brings its initial noise into its mask's bounding box
    grown by one cell (where ``valid``, i.e. where its shifted trajectory has data); then every
    object pastes its mask's cells at every step. So no object's box overwrites another object's
    mask at the start. Smaller masks come later in both passes, so they end on top.
    """
    steps_plus_one = trajectories[0].shape[0] if trajectories else 1
    comp = background.unsqueeze(0).repeat(steps_plus_one, *([1] * background.ndim)).clone()
    h, w = background.shape[-2:]
    owner = torch.zeros(h, w, dtype=torch.long, device=background.device)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))  # stable: ties keep order
    order = [i for i in order if masks[i].any()]
    for i in order:
        rows, cols = torch.nonzero(masks[i], as_tuple=True)
        start = torch.zeros(h, w, dtype=torch.bool, device=background.device)
        start[
            max(int(rows.min()) - 1, 0) : int(rows.max()) + 2,
            max(int(cols.min()) - 1, 0) : int(cols.max()) + 2,
        ] = True
        if valid is not None:
            start &= valid[i].to(background.device)
        comp[0] = torch.where(start, trajectories[i][0], comp[0])
    for i in order:
        mask = masks[i].to(background.device)
        comp = torch.where(mask, trajectories[i], comp)
        owner[mask] = i + 1
    return Composition(latents=comp, frozen=owner > 0, owner=owner)


def stack_compositions(compositions: Sequence[Composition]) -> Composition:
    """Several compositions as one batch, a row each (candidates of one layout): latents
    ``(steps + 1, n, C, h, w)``, ``frozen`` ``(n, 1, h, w)`` (it broadcasts over the channels),
    ``owner`` ``(n, h, w)``."""
    if len(compositions) == 1:
        return compositions[0]
    return Composition(
        latents=torch.cat([c.latents for c in compositions], dim=1),
        frozen=torch.stack([c.frozen for c in compositions]).unsqueeze(1),
        owner=torch.stack([c.owner for c in compositions]),
    )
