"""Per-object results: what one object generated alone leaves behind, and placing it in a scene.

An :class:`ObjectResult` is the object where it was generated (LMD: a box centred at the bottom of
the canvas; LMD+: its own box): every latent of its run, its mask, and its word token's attention
maps on the guidance layers for the steps the overall run may guide. It is what the
:class:`lmd_bot.diffusion.cache.ObjectCache` keeps, on the CPU, and it is never modified.

An :class:`ObjectRun` is a result placed in one round's scene: moved by whole shift quanta (8
latent cells, 64 px for SD; see :mod:`lmd_bot.diffusion.latents`) to the object's current box,
with the cells the move vacated marked invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmd_bot.diffusion.latents import shift_quanta
from lmd_bot.diffusion.spec import ObjectSpec
from lmd_bot.layout.geometry import NBox


@dataclass(frozen=True)
class ObjectResult:
    trajectory: torch.Tensor  # (run steps + 1, 1, C, h, w): initial noise to the last latent run
    mask: torch.Tensor  # (h, w) bool, latent grid
    maps: dict[str, torch.Tensor]  # guidance layer -> (recorded steps, heads, gh, gw), steps 0, 1, ...
    box: NBox  # where it was generated
    guidance_losses: tuple[float, ...] = ()

    @property
    def nbytes(self) -> int:
        tensors = [self.trajectory, self.mask, *self.maps.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> ObjectResult:
        return ObjectResult(
            trajectory=self.trajectory.to(device),
            mask=self.mask.to(device),
            maps={key: m.to(device) for key, m in self.maps.items()},
            box=self.box,
            guidance_losses=self.guidance_losses,
        )

    def state(self) -> dict:
        """Plain tensors, lists and floats: what ``torch.load(weights_only=True)`` reads back."""
        return {
            "trajectory": self.trajectory,
            "mask": self.mask,
            "maps": dict(self.maps),
            "box": list(self.box),
            "guidance_losses": list(self.guidance_losses),
        }

    @classmethod
    def from_state(cls, state: dict) -> ObjectResult:
        """The inverse of :meth:`state`; ``ValueError`` when ``state`` is not one."""
        try:
            trajectory, mask, maps = state["trajectory"], state["mask"], state["maps"]
            box = tuple(float(v) for v in state["box"])
            losses = tuple(float(v) for v in state["guidance_losses"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an object result: {exc}") from exc
        tensors_ok = (
            isinstance(trajectory, torch.Tensor)
            and trajectory.ndim == 5
            and isinstance(mask, torch.Tensor)
            and mask.dtype == torch.bool
            and mask.shape == trajectory.shape[-2:]
            and isinstance(maps, dict)
            and all(isinstance(m, torch.Tensor) and m.ndim == 4 for m in maps.values())
        )
        if not tensors_ok or len(box) != 4:
            raise ValueError("not an object result: wrong shapes or types")
        return cls(trajectory=trajectory, mask=mask, maps=maps, box=box, guidance_losses=losses)


@dataclass
class ObjectRun:
    """An object's result placed at its box for one round's overall run."""

    spec: ObjectSpec
    result: ObjectResult
    trajectory: torch.Tensor  # (steps + 1, 1, C, h, w), moved
    mask: torch.Tensor  # (h, w) bool, moved
    maps: dict[str, torch.Tensor]  # moved like the latents
    valid: torch.Tensor  # (h, w) bool: where the moved trajectory has data
    offset: tuple[int, int] = (0, 0)  # the move, in shift quanta (dy, dx): docs/method.md, "Geometry"
    cached: bool = False  # the result came from the cache: no per-object denoising this round


def place(
    spec: ObjectSpec,
    result: ObjectResult,
    offset: tuple[int, int],
    image_hw: tuple[int, int],
    *,
    cached: bool,
    quantum_px: int,
) -> ObjectRun:
    """``result`` moved by ``offset`` quanta of ``quantum_px``, latents, mask and maps together."""
    valid = torch.ones_like(result.mask)
    trajectory, mask, maps = result.trajectory, result.mask, result.maps
    if offset != (0, 0):
        trajectory = shift_quanta(trajectory, offset, image_hw, quantum_px)
        mask = shift_quanta(mask, offset, image_hw, quantum_px)
        valid = shift_quanta(valid, offset, image_hw, quantum_px)
        maps = {key: shift_quanta(m, offset, image_hw, quantum_px) for key, m in maps.items()}
    return ObjectRun(
        spec=spec,
        result=result,
        trajectory=trajectory,
        mask=mask,
        maps=maps,
        valid=valid,
        offset=offset,
        cached=cached,
    )
