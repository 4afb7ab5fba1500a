"""Backward guidance of the latents (lmd-method.md section 3.5).

Before a denoising step, a few times: run the UNet on the conditional prompt alone, compute the
layout loss on the captured attention maps, and move the latents against its gradient::

    z <- z - step_size(t) * d(loss_scale * loss)/dz

Faithful to the reference, including its two quiet behaviours:

- **stale-loss early stop** (pitfall 1, the default): the loop runs while the *last computed*
  loss, divided by ``loss_scale``, is above ``loss_threshold``, and that value is carried from
  step to step; once a step ends below the threshold the loss is never computed again, so guidance
  is off for the rest of the run. ``stale_loss_stop=False`` instead re-checks the loss at every
  step (stronger guidance, more UNet passes);
- **scheduler-dependent step size** (pitfall 2): ``sigma_index^2`` for schedulers with ``sigmas``
  (LMS, Euler), ``sqrt(1 - alphabar_t)`` for those with ``alphas_cumprod`` (DDIM, what LMD's
  numbers use), 1 otherwise.

The schedule (iterations per step, guided steps) is written for 50 steps, the reference's count;
for other step counts it is stretched proportionally (step ``i`` of ``n`` uses the entry of step
``i * 50 // n``), so 25 steps guide the first 15, as 50 steps guide the first 30.

The guidance pass stops the UNet right after the last layer it reads (see
:class:`lmd_bot.diffusion.attention.StopForward`): the later blocks cannot affect the loss, so the
gradient is the reference's, for less compute and memory.
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
    """How far the latents move per unit of gradient at this step (pitfall 2)."""
    if hasattr(scheduler, "sigmas"):
        return float(scheduler.sigmas[index]) ** 2
    if hasattr(scheduler, "alphas_cumprod"):
        return math.sqrt(1.0 - float(scheduler.alphas_cumprod[int(timestep)]))
    return 1.0


LossFn = Callable[[Mapping[str, torch.Tensor], int], torch.Tensor]


class BackwardGuidance:
    """Guidance for one denoising run; holds the carried loss of the stale-loss early stop."""

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
    ) -> None:
        self.params = params
        self.unet = unet
        self.scheduler = scheduler
        self.store = store
        self.cond_embeddings = cond_embeddings
        self.loss_fn = loss_fn
        self.steps = steps
        self.last_loss = INITIAL_LOSS  # scaled, as the reference keeps it
        self.passes = 0  # UNet forward+backward passes run
        self.losses: list[float] = []  # every computed loss, unscaled, for tests and logs

    def __call__(self, latents: torch.Tensor, index: int, timestep: torch.Tensor) -> torch.Tensor:
        n_iter = self.params.iterations(index, self.steps)
        if n_iter and not self.params.stale_loss_stop:
            self.last_loss = INITIAL_LOSS
        scale = self.params.loss_scale
        it = 0
        while it < n_iter and self.last_loss / scale > self.params.loss_threshold:
            with torch.enable_grad():
                z = latents.detach().requires_grad_(True)
                with self.store.guidance(GUIDANCE_KEYS) as maps:
                    with contextlib.suppress(StopForward):
                        self.unet(
                            self.scheduler.scale_model_input(z, timestep),
                            timestep,
                            encoder_hidden_states=self.cond_embeddings,
                        )
                    loss = self.loss_fn(maps, index) * scale
                (grad,) = torch.autograd.grad(loss, z)
            self.passes += 1
            value = loss.item()
            if not math.isfinite(value) or not torch.isfinite(grad).all():
                # A NaN would poison the latents; the reference would stop here too (NaN > x is
                # false), but only after applying the update.
                log.warning("guidance loss or gradient is not finite at step %d; guidance stops", index)
                self.last_loss = 0.0
                break
            step = step_size(self.scheduler, index, timestep)
            latents = (z.detach().float() - step * grad.float()).to(latents.dtype)
            self.last_loss = value
            self.losses.append(value / scale)
            it += 1
        return latents
