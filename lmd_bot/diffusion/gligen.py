"""GLIGEN grounding on diffusers' gated UNet (docs/method.md, "LMD+").

A GLIGEN UNet (``UNet2DConditionModel`` with ``attention_type="gated"``) has a position net, which
turns each object's box and phrase feature into a grounding token, and a gated fuser in every
transformer block, which lets the visual tokens attend to the grounding tokens. Its inputs travel
through ``cross_attention_kwargs={"gligen": {"boxes", "positive_embeddings", "masks"}}``:

- up to :data:`MAX_OBJECTS` slots per sample; boxes are normalized ``(x0, y0, x1, y1)``; a slot's
  phrase feature is the CLIP text encoder's **pooled** output for the phrase; ``masks`` marks the
  real slots (the others get the position net's learned null features);
- with classifier-free guidance the unconditional half gets the same tensors with every mask at
  zero: it sees only null grounding tokens (:func:`with_unconditional`);
- scheduled sampling: the fusers run for the first ``int(beta * steps)`` steps only, then the
  UNet is plain SD. They are switched with each fuser's ``enabled`` flag, diffusers' own switch,
  and :func:`fuser_switch` restores the flags afterwards, errors and cancellation included.

More than 30 objects is an error (:func:`check_object_count`), never a silent truncation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from lmd_bot.errors import RenderError
from lmd_bot.layout.geometry import NBox
from lmd_bot.rendering import RenderMode

MAX_OBJECTS = 30  # GLIGEN's slots per sample


def is_gligen_unet(unet) -> bool:
    return getattr(unet, "position_net", None) is not None


def check_object_count(n_objects: int, mode: RenderMode) -> None:
    if n_objects > MAX_OBJECTS:
        raise RenderError(
            f"{n_objects} objects; GLIGEN grounds at most {MAX_OBJECTS}",
            user_message=(
                f"The '{mode.value}' mode can place at most {MAX_OBJECTS} objects and this scene has "
                f"{n_objects}. Remove some objects or use the 'lmd' mode."
            ),
        )


def fuser_steps(beta: float, steps: int) -> int:
    """How many leading steps run the fusers (diffusers' and the reference's rounding down)."""
    return int(beta * steps)


def grounding_inputs(
    boxes: Sequence[Sequence[NBox]],
    features: Sequence[torch.Tensor],
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """GLIGEN inputs for a batch: row ``r`` grounds ``features[r][i]`` (pooled CLIP, ``(n, dim)``)
    in ``boxes[r][i]``. Returns ``boxes (B, 30, 4)``, ``positive_embeddings (B, 30, dim)`` and
    ``masks (B, 30)``."""
    if len(boxes) != len(features):
        raise ValueError(f"{len(boxes)} rows of boxes but {len(features)} rows of phrase features")
    dim = features[0].shape[-1]
    out_boxes = torch.zeros(len(boxes), MAX_OBJECTS, 4)
    out_features = torch.zeros(len(boxes), MAX_OBJECTS, dim)
    masks = torch.zeros(len(boxes), MAX_OBJECTS)
    for row, (row_boxes, row_features) in enumerate(zip(boxes, features, strict=True)):
        n = len(row_boxes)
        if n > MAX_OBJECTS:
            raise ValueError(f"{n} boxes in one sample; GLIGEN has {MAX_OBJECTS} slots")
        if row_features.shape[0] != n:
            raise ValueError(f"{n} boxes but {row_features.shape[0]} phrase features")
        if n:
            out_boxes[row, :n] = torch.tensor(row_boxes, dtype=torch.float32)
            out_features[row, :n] = row_features.float().cpu()
            masks[row, :n] = 1.0
    return {
        "boxes": out_boxes.to(device, dtype),
        "positive_embeddings": out_features.to(device, dtype),
        "masks": masks.to(device, dtype),
    }


def null_grounding(grounding: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same rows with every slot masked: only the learned null grounding tokens."""
    return {**grounding, "masks": torch.zeros_like(grounding["masks"])}


def with_unconditional(grounding: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inputs for a CFG batch ``[unconditional rows; conditional rows]``: the unconditional half is
    :func:`null_grounding` (docs/method.md, "LMD+": it must not see the boxes)."""
    null = null_grounding(grounding)
    return {key: torch.cat([null[key], grounding[key]]) for key in grounding}


@contextmanager
def fuser_switch(unet) -> Iterator[Callable[[bool], None]]:
    """Yields ``enable(on)``, which turns every gated fuser of ``unet`` on or off; the flags are
    restored on exit. On a UNet without fusers (plain SD) ``enable`` does nothing."""
    from diffusers.models.attention import GatedSelfAttentionDense

    fusers = [m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense)]
    saved = [fuser.enabled for fuser in fusers]

    def enable(on: bool) -> None:
        for fuser in fusers:
            fuser.enabled = on

    try:
        yield enable
    finally:
        for fuser, flag in zip(fusers, saved, strict=True):
            fuser.enabled = flag
