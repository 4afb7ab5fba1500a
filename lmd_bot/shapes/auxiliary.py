"""Training-only losses for what GLIGEN's adapters need before they can use a box (docs/shapes.md,
"Why: the adapters ignore their boxes"). Both are off by default (``TrainConfig.position_weight``,
``route_weight``); inference never sees them: the heads are not exported, the processors are
training's own.

- **position**: a fuser can only send a box's phrase to the visual tokens inside the box if each
  token knows where it is. Nothing in the world's captions rewards that, so the base's features
  carry almost no position (``probe_position``). A linear read-out per transformer block, from the
  tokens entering it to their (x, y) in [-1, 1], trained with the base, makes the base encode it.
- **routing**: inside object *j*'s mask, each visual token of a fuser's self-attention should
  attend to *j*'s grounding token (``-log p``, the world's exact masks as targets), as the
  grounding loss of :mod:`lmd_bot.shapes.grounding` does for cross-attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmd_bot.diffusion.gligen import MAX_OBJECTS
from lmd_bot.shapes.grounding import CaptureTrainingProcessor


class PositionHeads(torch.nn.Module):
    """One read-out per transformer block of ``unet``; :meth:`loss` after a forward pass of it."""

    def __init__(self, unet) -> None:
        super().__init__()
        blocks = [(n, m) for n, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
        self.heads = torch.nn.ModuleDict()
        self._seen: dict[str, torch.Tensor] = {}
        for name, block in blocks:
            width = block.norm1.normalized_shape[0]
            key = name.replace(".", "_")
            self.heads[key] = torch.nn.Sequential(
                torch.nn.LayerNorm(width, elementwise_affine=False), torch.nn.Linear(width, 2)
            )
            block.register_forward_pre_hook(self._keeper(key), with_kwargs=True)

    def _keeper(self, key: str):
        def keep(_module, args, kwargs) -> None:
            self._seen[key] = args[0] if args else kwargs["hidden_states"]

        return keep

    def loss(self) -> torch.Tensor:
        """Mean squared error of every block's read-out of the tokens it saw last; clears them."""
        if not self._seen:
            raise RuntimeError("no forward pass of the UNet since the last loss")
        losses = []
        for key, tokens in self._seen.items():
            side = math.isqrt(tokens.shape[1])
            ys, xs = torch.meshgrid(
                torch.linspace(-1, 1, side, device=tokens.device),
                torch.linspace(-1, 1, side, device=tokens.device),
                indexing="ij",
            )
            where = torch.stack([xs.flatten(), ys.flatten()], 1).expand(tokens.shape[0], -1, -1)
            losses.append(F.mse_loss(self.heads[key](tokens), where))
        self._seen.clear()
        return torch.stack(losses).mean()


def install_routing_capture(gligen_unet) -> dict[str, torch.Tensor]:
    """Capture processors on every fuser's attention; returns their store."""
    store: dict[str, torch.Tensor] = {}
    for name, module in gligen_unet.named_modules():
        if name.endswith("fuser.attn"):
            # the cross-attention capture, on a self-attention: it attends over its own tokens
            module.set_processor(CaptureTrainingProcessor(name, store))
    return store


def routing_loss(store: dict[str, torch.Tensor], slot_masks: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(loss, mean attention share of in-mask tokens on their own grounding token) over the captured
    fusers. ``slot_masks``: ``(B, 30, S, S)``, grounding slot *j*'s object mask (zeros for empty
    slots); clears ``store``."""
    losses, shares = [], []
    for probs in store.values():
        visual = probs.shape[2] - MAX_OBJECTS
        side = math.isqrt(visual)
        inside = (F.adaptive_avg_pool2d(slot_masks, side).flatten(2) > 0.5).float()  # (B, 30, HW)
        to_slots = probs.mean(1)[:, :visual, visual:]  # (B, HW, 30)
        count = inside.sum(-1)
        used = count > 0
        if not used.any():
            continue
        log_p = torch.einsum("bkp,bpk->bk", inside, to_slots.clamp_min(1e-6).log())
        losses.append(-(log_p[used] / count[used]).mean())
        share = torch.einsum("bkp,bpk->bk", inside, to_slots.detach())
        shares.append(float((share[used] / count[used]).mean()))
    store.clear()
    if not losses:
        return slot_masks.new_zeros(()), 0.0
    return torch.stack(losses).mean(), sum(shares) / len(shares)
