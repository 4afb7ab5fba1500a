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
same selection rule is the box itself on the latent grid (:func:`box_prompt_mask`); without SAM it
uses the attention fallback above.

An empty mask (nothing selected) falls back to the box the object was drawn in, so every object
is composed somewhere.
"""

from __future__ import annotations

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


def sam_mask(
    sam: SamParts,
    image,
    coarse: torch.Tensor,
    params: MaskParams,
    *,
    latent_hw: tuple[int, int],
    point: tuple[float, float] | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """SAM's mask for the object at ``point`` or in ``box`` (image pixels, ``x0, y0, x1, y1``) of
    a PIL ``image``, on the latent grid: ``(h, w)`` bool, chosen by :func:`select_mask` against
    ``coarse`` among SAM's three masks resized to the latent grid (areas counted there, IoU after
    a second resize to ``coarse``'s grid, as the reference does).

    On CUDA SAM runs under autocast (float16 over its float32 weights), as the reference runs it."""
    if (point is None) == (box is None):
        raise ValueError("prompt SAM with exactly one of a point or a box")
    model = sam.model
    param = next(model.parameters())
    if point is not None:
        inputs = sam.processor(images=image, input_points=[[[list(point)]]], return_tensors="pt")
        prompt = {"input_points": inputs["input_points"].to(param.device, param.dtype)}
    else:
        inputs = sam.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
        prompt = {"input_boxes": inputs["input_boxes"].to(param.device, param.dtype)}
    with torch.no_grad(), torch.autocast(param.device.type, enabled=param.device.type == "cuda"):
        out = model(
            pixel_values=inputs["pixel_values"].to(param.device, param.dtype),
            multimask_output=True,
            **prompt,
        )
    masks = sam.processor.image_processor.post_process_masks(
        out.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )[0][0]
    return pick_mask(masks, out.iou_scores[0, 0].float().cpu(), coarse, latent_hw, params)


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


def box_prompt_mask(
    sam: SamParts,
    image,
    *,
    nbox: NBox,
    latent_hw: tuple[int, int],
    image_hw: tuple[int, int],
    params: MaskParams,
) -> torch.Tensor:
    """LMD+'s mask: SAM prompted with the box the object was generated in, checked against the
    box's own mask on the latent grid. ``(h, w)`` bool on the CPU."""
    lh, lw = latent_hw
    coarse = torch.zeros(lh, lw, dtype=torch.bool)
    rect = nbox_to_grid_rect(nbox, lh, lw)
    coarse[rect.y0 : rect.y1, rect.x0 : rect.x1] = True
    mask = sam_mask(sam, image, coarse, params, latent_hw=latent_hw, box=box_pixels(nbox, image_hw))
    return _box_fallback(mask, nbox)


def object_mask(
    token_map: torch.Tensor,
    *,
    nbox: NBox,
    latent_hw: tuple[int, int],
    image_hw: tuple[int, int],
    params: MaskParams,
    sam: SamParts | None = None,
    image=None,
) -> torch.Tensor:
    """The object's mask on the latent grid: ``(h, w)`` bool, on the CPU.

    ``token_map`` is the averaged ``(h16, w16)`` word-token attention; ``nbox`` the box the object
    was generated in; ``image`` the decoded per-object image (needed with ``sam``).
    """
    lh, lw = latent_hw
    gh, gw = token_map.shape
    smoothed = normalize(gaussian_blur(token_map.float().cpu(), params.sigma))
    coarse = smoothed > params.point_threshold
    if sam is not None:
        row, col = divmod(int(smoothed.argmax()), gw)
        # The peak cell's corner in whole image pixels, where the reference puts the point.
        point = (col * (image_hw[1] // gw), row * (image_hw[0] // gh))
        mask = sam_mask(sam, image, coarse, params, latent_hw=latent_hw, point=point)
    else:
        rect = nbox_to_grid_rect(nbox, gh, gw)
        allowed = torch.zeros(gh, gw)
        allowed[max(rect.y0 - 1, 0) : rect.y1 + 1, max(rect.x0 - 1, 0) : rect.x1 + 1] = 1.0
        allowed = F.interpolate(allowed[None, None], size=(lh, lw), mode="nearest")[0, 0] > 0.5
        upsampled = F.interpolate(smoothed[None, None], size=(lh, lw), mode="bilinear", align_corners=False)
        mask = (upsampled[0, 0] > params.point_threshold) & allowed
    return _box_fallback(mask, nbox)
