"""Backward guidance of the latents (docs/method.md, "Backward guidance").

Before a denoising step, a few times: run the UNet on the conditional prompt alone, compute the
layout loss on the captured attention maps, and move the latents against its gradient::

    z <- z - step_size(t) * d(loss_scale * loss)/dz

Faithful to the reference (docs/method.md, "Backward guidance"), including its two quiet
behaviours:

- **stale-loss early stop** (the default): the loop runs while the *last computed* loss, divided
  by ``loss_scale``, is above ``loss_threshold``, and that value is carried from step to step;
  once a step ends below the threshold the loss is never computed again, so guidance is off for
  the rest of the run. ``stale_loss_stop=False`` instead re-checks the loss at every step
  (stronger guidance, more UNet passes);
- **scheduler-dependent step size**: ``sigma_index^2`` for schedulers with ``sigmas`` (LMS,
  Euler), ``sqrt(1 - alphabar_t)`` for those with ``alphas_cumprod`` (DDIM, what LMD's numbers
  use), 1 otherwise.

The schedule (iterations per step, guided steps) is written for 50 steps, the reference's count;
for other step counts it is stretched proportionally (step ``i`` of ``n`` uses the entry of step
``i * 50 // n``), so 25 steps guide the first 15, as 50 steps guide the first 30.

The guidance pass stops the UNet right after the last layer it reads (see
:class:`lmd_bot.diffusion.attention.StopForward`): the later blocks cannot affect the loss, so the
gradient is the reference's, for less compute and memory.

Numerics: the latents, the gradient and the update are float32 whatever the weights' dtype (the
UNet gets the latents cast to its own dtype, a differentiable cast); with float32 weights, the
default, this is the reference's LMD, and under autocast the reference's LMD+. A loss or gradient
that is not finite never reaches the latents: that row's guidance stops, and the event is logged
as an error and counted (:attr:`BackwardGuidance.nonfinite`, the render's ``guidance_nonfinite``).

Batches: the per-object runs of one round are guided together, one UNet call per iteration for
all the objects still being guided. Each row is an independent sample (the UNet mixes nothing
across the batch), its loss is computed on its own maps, and the gradient of the summed losses
with respect to a row's latents is that row's own gradient. Each row carries its own stale loss,
so a row stops exactly when it would have stopped alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, AttentionStore, StopForward
from lmd_bot.diffusion.losses import EnergyWeights

log = logging.getLogger(__name__)

REFERENCE_STEPS = 50
# The reference's iteration schedule for step indices 0..29 of 50.
DEFAULT_MAX_ITER = (4,) * 5 + (3,) * 5 + (2,) * 5 + (2,) * 5 + (1,) * 10
# The reference's initial "previous loss": large enough that the first step always guides.
INITIAL_LOSS = 10000.0


class GuidanceParams(BaseModel):
    """Backward guidance settings; the defaults are the reference's (section 3.1)."""

    model_config = ConfigDict(frozen=True)

    loss_scale: float = Field(5.0, gt=0)
    loss_threshold: float = Field(5.0, ge=0)
    max_iter: tuple[int, ...] = DEFAULT_MAX_ITER
    max_index_step: int = Field(30, ge=0)  # guided steps, out of REFERENCE_STEPS
    fg_top_p: float = Field(0.2, gt=0, le=1)
    bg_top_p: float = Field(0.2, gt=0, le=1)
    fg_weight: float = 1.0
    bg_weight: float = 4.0
    stale_loss_stop: bool = True

    @property
    def weights(self) -> EnergyWeights:
        return EnergyWeights(self.fg_top_p, self.bg_top_p, self.fg_weight, self.bg_weight)

    def iterations(self, index: int, steps: int) -> int:
        """Guidance iterations before step ``index`` of a ``steps``-step run (0: not guided)."""
        ref_index = index * REFERENCE_STEPS // steps
        if ref_index >= self.max_index_step or not self.max_iter:
            return 0
        return self.max_iter[min(ref_index, len(self.max_iter) - 1)]


def step_size(scheduler, index: int, timestep: torch.Tensor) -> float:
    """How far the latents move per unit of gradient at this step (docs/method.md, "Backward guidance")."""
    if hasattr(scheduler, "sigmas"):
        return float(scheduler.sigmas[index]) ** 2
    if hasattr(scheduler, "alphas_cumprod"):
        return math.sqrt(1.0 - float(scheduler.alphas_cumprod[int(timestep)]))
    return 1.0


# (maps of one row: layer -> (heads, h, w, tokens), step index, row) -> unscaled loss
LossFn = Callable[[Mapping[str, torch.Tensor], int, int], torch.Tensor]


class BackwardGuidance:
    """Guidance for one batch of denoising runs; holds each row's carried loss (stale-loss stop).

    ``cond_embeddings`` is ``(batch, 77, dim)``; ``grounding``, when given, holds GLIGEN inputs
    with one row per sample (``boxes``, ``positive_embeddings``, ``masks``), fed to the UNet as
    ``cross_attention_kwargs={"gligen": ...}`` in the guidance pass.
    """

    def __init__(
        self,
        params: GuidanceParams,
        *,
        unet,
        scheduler,
        store: AttentionStore,
        cond_embeddings: torch.Tensor,
        loss_fn: LossFn,
        steps: int,
        grounding: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.params = params
        self.unet = unet
        self.scheduler = scheduler
        self.store = store
        self.cond_embeddings = cond_embeddings
        self.loss_fn = loss_fn
        self.steps = steps
        self.grounding = grounding
        batch = cond_embeddings.shape[0]
        self.last_loss = [INITIAL_LOSS] * batch  # scaled, as the reference keeps it
        self.passes = 0  # UNet forward+backward calls (one per iteration, whatever the batch)
        self.losses: list[list[float]] = [[] for _ in range(batch)]  # per row, unscaled
        self.nonfinite: list[tuple[int, int]] = []  # (row, step index) where guidance hit NaN/inf

    def __call__(self, latents: torch.Tensor, index: int, timestep: torch.Tensor) -> torch.Tensor:
        n_iter = self.params.iterations(index, self.steps)
        if n_iter and not self.params.stale_loss_stop:
            self.last_loss = [INITIAL_LOSS] * len(self.last_loss)
        scale, threshold = self.params.loss_scale, self.params.loss_threshold
        for _ in range(n_iter):
            active = [row for row, loss in enumerate(self.last_loss) if loss / scale > threshold]
            if not active:
                break
            rows = torch.tensor(active, device=latents.device)
            kwargs = {}
            if self.grounding is not None:
                kwargs["cross_attention_kwargs"] = {"gligen": {k: v[rows] for k, v in self.grounding.items()}}
            with torch.enable_grad():
                z = latents[rows].detach().float().requires_grad_(True)
                with self.store.guidance(GUIDANCE_KEYS) as maps:
                    with contextlib.suppress(StopForward):
                        self.unet(
                            self.scheduler.scale_model_input(z, timestep).to(self.unet.dtype),
                            timestep,
                            encoder_hidden_states=self.cond_embeddings[rows],
                            **kwargs,
                        )
                    losses = torch.stack(
                        [
                            self.loss_fn({key: m[i] for key, m in maps.items()}, index, row)
                            for i, row in enumerate(active)
                        ]
                    )
                    losses = losses * scale
                (grad,) = torch.autograd.grad(losses.sum(), z)
            self.passes += 1
            step = step_size(self.scheduler, index, timestep)
            values = losses.detach().float().tolist()
            latents = latents.clone()
            for i, row in enumerate(active):
                value = values[i]
                if not math.isfinite(value) or not torch.isfinite(grad[i]).all():
                    # A NaN would poison the latents; the reference would stop here too (NaN > x is
                    # false), but only after applying the update. Loud: logged and counted.
                    log.error(
                        "guidance loss %s or its gradient is not finite at step %d (row %d): guidance "
                        "stops for this sample; float16 weights are the usual cause (diffusion.dtype)",
                        value,
                        index,
                        row,
                    )
                    self.nonfinite.append((row, index))
                    self.last_loss[row] = 0.0
                    continue
                latents[row] = (z[i].detach() - step * grad[i].float()).to(latents.dtype)
                self.last_loss[row] = value
                self.losses[row].append(value / scale)
        return latents
