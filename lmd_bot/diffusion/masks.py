"""The mask of an object generated alone (docs/method.md, "Masks").

From the per-object run's word-token attention (the 16x16 ``SAM_KEY`` layer at 512 px, averaged
over the later steps and the heads), smoothed by a Gaussian (sigma 1.5 cells):

- with SAM: its peak is the point prompt; of SAM's three masks, the largest one that SAM is
  confident in (IoU score >= 0.85) and that overlaps the attention's coarse mask (the smoothed map
  above 0.25 of its range, IoU >= 0.25) wins: ``area - max_area * [conf < 0.85] - max_area *
  [iou < 0.25]``, argmax. As in the reference, SAM's masks are first resized bilinearly to the
  latent grid, keeping every non-zero cell (which dilates them slightly); areas are counted
  there, and the coarse IoU is taken after a second resize to the attention grid;
- without SAM (disabled, or it failed to load): the coarse mask itself, resized to the latent grid
  and limited to the object's box grown by one attention cell, since attention also lights up
  scattered background cells that must not be frozen.

LMD+ (section 4) prompts SAM with the object's box instead of a point, and its coarse mask for the
same selection rule is the box itself on the latent grid (:func:`box_prompt_masks`); without SAM
it uses the attention fallback above.

Every object of a render is masked in one SAM call (its images, prompts and masks batched).

An empty mask (nothing selected) falls back to the box the object was drawn in, so every object
is composed somewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.layout.geometry import NBox, nbox_to_grid_rect


class MaskParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    sigma: float = Field(1.5, gt=0)  # Gaussian smoothing of the token map, in cells
    point_threshold: float = Field(0.25, ge=0, le=1)  # coarse mask: normalized map above this
    min_confidence: float = 0.85  # SAM masks below this IoU score are discouraged
    min_coarse_iou: float = 0.25  # ... and so are those overlapping the coarse mask less


def gaussian_blur(image: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """2-D Gaussian filter of ``(h, w)`` with mirrored borders (scipy.ndimage's "reflect" mode)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = image.float()
    for dim in (0, 1):
        n = out.shape[dim]
        # Mirror with the edge repeated (d c b a | a b c d), for any radius, even beyond ``n``.
        idx = torch.arange(-radius, n + radius) % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
        padded = out.index_select(dim, idx.to(out.device)).movedim(dim, -1)
        smoothed = F.conv1d(padded.reshape(-1, 1, padded.shape[-1]), kernel.view(1, 1, -1).to(out.device))
        out = smoothed.reshape(*padded.shape[:-1], n).movedim(-1, dim)
    return out


def normalize(image: torch.Tensor) -> torch.Tensor:
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else torch.zeros_like(image)


def resize_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of a boolean ``(h0, w0)`` mask, keeping every non-zero cell."""
    resized = F.interpolate(mask[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    return resized[0, 0] > 0


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def select_mask(
    masks: torch.Tensor, confidences: torch.Tensor, coarse: torch.Tensor, params: MaskParams
) -> int:
    """Index of the largest acceptable mask of ``masks`` ``(n, h, w)`` (bool, the latent grid):
    areas are counted on that grid, IoU with ``coarse`` after resizing the masks to its grid."""
    areas = masks.flatten(1).sum(dim=1).float()
    max_area = areas.max()
    h, w = coarse.shape
    ious = torch.tensor([iou(resize_mask(m, h, w), coarse) for m in masks])
    scores = (
        areas
        - max_area * (confidences.float().cpu() < params.min_confidence)
        - max_area * (ious < params.min_coarse_iou)
    )
    return int(scores.argmax())


@dataclass
class SamParts:
    """transformers' ``SamModel`` and its ``SamProcessor``."""

    model: object
    processor: object
    name: str = "sam"  # identifies the weights in the per-object cache's keys


def latent_masks(masks: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """SAM's full-resolution masks ``(n, H, W)`` on the latent grid ``(n, h, w)``, every touched
    cell kept; the reference selects among these, not among the full-resolution ones."""
    return torch.stack([resize_mask(m, *latent_hw) for m in masks])


def box_pixels(nbox: NBox, image_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box as whole image pixels ``(x0, y0, x1, y1)``, rounded as the reference rounds it."""
    r = nbox_to_grid_rect(nbox, *image_hw)
    return (r.x0, r.y0, r.x1, r.y1)


def sam_masks(
    sam: SamParts,
    images: Sequence,
    coarse: Sequence[torch.Tensor],
    params: MaskParams,
    *,
    latent_hw: tuple[int, int],
    points: Sequence[tuple[float, float]] | None = None,
    boxes: Sequence[tuple[int, int, int, int]] | None = None,
) -> list[torch.Tensor]:
    """SAM's mask for each object, in **one** call for all of them: object ``i`` at ``points[i]``
    or in ``boxes[i]`` (image pixels, ``x0, y0, x1, y1``) of the PIL ``images[i]``, on the latent
    grid: ``(h, w)`` bool, chosen by :func:`select_mask` against ``coarse[i]`` among SAM's three
    masks resized to the latent grid (areas counted there, IoU after a second resize to
    ``coarse[i]``'s grid, as the reference does).

    On CUDA SAM's weights are float16 (:func:`lmd_bot.diffusion.loading.load_sam`) and it runs
    under autocast, as the reference runs it; on the CPU float32."""
    if (points is None) == (boxes is None):
        raise ValueError("prompt SAM with exactly one of points or boxes")
    model = sam.model
    param = next(model.parameters())
    if points is not None:
        inputs = sam.processor(
            images=list(images), input_points=[[[list(p)]] for p in points], return_tensors="pt"
        )
        prompt = {"input_points": inputs["input_points"].to(param.device, param.dtype)}
    else:
        inputs = sam.processor(
            images=list(images), input_boxes=[[list(b)] for b in boxes], return_tensors="pt"
        )
        prompt = {"input_boxes": inputs["input_boxes"].to(param.device, param.dtype)}
    with torch.no_grad(), torch.autocast(param.device.type, enabled=param.device.type == "cuda"):
        out = model(
            pixel_values=inputs["pixel_values"].to(param.device, param.dtype),
            multimask_output=True,
            **prompt,
        )
    masks = sam.processor.image_processor.post_process_masks(
        out.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    scores = out.iou_scores.float().cpu()
    return [pick_mask(masks[i][0], scores[i, 0], coarse[i], latent_hw, params) for i in range(len(coarse))]


def pick_mask(
    masks: torch.Tensor,
    confidences: torch.Tensor,
    coarse: torch.Tensor,
    latent_hw: tuple[int, int],
    params: MaskParams,
) -> torch.Tensor:
    """Of SAM's full-resolution ``masks`` ``(n, H, W)``, the chosen one on the latent grid."""
    small = latent_masks(masks, latent_hw)
    return small[select_mask(small, confidences, coarse, params)]


def _box_fallback(mask: torch.Tensor, nbox: NBox) -> torch.Tensor:
    if not mask.any():
        lh, lw = mask.shape
        rect = nbox_to_grid_rect(nbox, lh, lw)
        mask[rect.y0 : rect.y1, rect.x0 : rect.x1] = True
    return mask


def box_prompt_masks(
    sam: SamParts,
    images: Sequence,
    *,
    nboxes: Sequence[NBox],
    latent_hw: tuple[int, int],
    image_hw: tuple[int, int],
    params: MaskParams,
) -> list[torch.Tensor]:
    """LMD+'s masks: SAM prompted with the box each object was generated in, checked against the
    box's own mask on the latent grid. ``(h, w)`` bool on the CPU, one per object."""
    lh, lw = latent_hw
    coarse = []
    for nbox in nboxes:
        rect = nbox_to_grid_rect(nbox, lh, lw)
        box_mask = torch.zeros(lh, lw, dtype=torch.bool)
        box_mask[rect.y0 : rect.y1, rect.x0 : rect.x1] = True
        coarse.append(box_mask)
    boxes = [box_pixels(nbox, image_hw) for nbox in nboxes]
    masks = sam_masks(sam, images, coarse, params, latent_hw=latent_hw, boxes=boxes)
    return [_box_fallback(mask, nbox) for mask, nbox in zip(masks, nboxes, strict=True)]


def attention_masks(
    token_maps: Sequence[torch.Tensor],
    *,
    nboxes: Sequence[NBox],
    latent_hw: tuple[int, int],
    image_hw: tuple[int, int],
    params: MaskParams,
    sam: SamParts | None = None,
    images: Sequence | None = None,
) -> list[torch.Tensor]:
    """Each object's mask on the latent grid from its attention: ``(h, w)`` bool, on the CPU.

    ``token_maps[i]`` is object ``i``'s averaged ``(h16, w16)`` word-token attention; ``nboxes[i]``
    the box it was generated in; ``images[i]`` its decoded image (needed with ``sam``, which is
    prompted at every object's attention peak in one call).
    """
    lh, lw = latent_hw
    smoothed = [normalize(gaussian_blur(m.float().cpu(), params.sigma)) for m in token_maps]
    coarse = [s > params.point_threshold for s in smoothed]
    if sam is not None:
        points = []
        for s in smoothed:
            gh, gw = s.shape
            row, col = divmod(int(s.argmax()), gw)
            # The peak cell's corner in whole image pixels, where the reference puts the point.
            points.append((col * (image_hw[1] // gw), row * (image_hw[0] // gh)))
        masks = sam_masks(sam, images, coarse, params, latent_hw=latent_hw, points=points)
    else:
        masks = []
        for s, nbox in zip(smoothed, nboxes, strict=True):
            gh, gw = s.shape
            rect = nbox_to_grid_rect(nbox, gh, gw)
            allowed = torch.zeros(gh, gw)
            allowed[max(rect.y0 - 1, 0) : rect.y1 + 1, max(rect.x0 - 1, 0) : rect.x1 + 1] = 1.0
            allowed = F.interpolate(allowed[None, None], size=(lh, lw), mode="nearest")[0, 0] > 0.5
            upsampled = F.interpolate(s[None, None], size=(lh, lw), mode="bilinear", align_corners=False)
            masks.append((upsampled[0, 0] > params.point_threshold) & allowed)
    return [_box_fallback(mask, nbox) for mask, nbox in zip(masks, nboxes, strict=True)]
