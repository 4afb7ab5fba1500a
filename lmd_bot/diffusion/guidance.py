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

**No host syncs inside the loop.** The carried losses stay on the device; which rows a step
guides is decided once, at the step's start, from a copy of them made at the end of the previous
guided step (on a GPU it is copied asynchronously and is long complete by then, so reading it
does not wait for the denoising pass queued since). Within a step every iteration runs for the
rows guided at its start; a row whose loss falls below the threshold (or turns non-finite)
mid-step keeps its latents and carried loss from then on, selected on the device, so the result
is the reference's. The cost: the iterations left in that one step still run (at most 3 passes
with the defaults, once per run; with ``stale_loss_stop=False``, in every guided step).
Non-finite events reach the log when they are read: at the next guided step, or when
:attr:`BackwardGuidance.nonfinite` is read after the run.

``compile=True`` compiles the loss with ``torch.compile`` (hundreds of small kernels fused into a
few on a GPU). Off by default: it has not been measured on a GPU yet, and compiling costs time at
the first pass of each batch shape. The UNet pass itself is not captured (a CUDA graph of the
truncated forward and backward would need a forward that stops without an exception).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence

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


# (maps: layer -> (batch, heads, h, w, tokens), step index, rows the batch holds) -> unscaled
# loss per row, (batch,): a :class:`lmd_bot.diffusion.losses.LayoutLoss`.
LossFn = Callable[[Mapping[str, torch.Tensor], int, Sequence[int]], torch.Tensor]


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
        compile: bool = False,
    ) -> None:
        self.params = params
        self.unet = unet
        self.scheduler = scheduler
        self.store = store
        self.cond_embeddings = cond_embeddings
        self.loss_fn = torch.compile(loss_fn, dynamic=False) if compile else loss_fn
        self.steps = steps
        self.grounding = grounding
        batch = cond_embeddings.shape[0]
        device = cond_embeddings.device
        self.carried = torch.full((batch,), INITIAL_LOSS, device=device)  # scaled, as the reference keeps it
        # Per row, the step at which its loss or gradient was not finite (then it stopped); -1: never.
        self.nonfinite_step = torch.full((batch,), -1.0, device=device)
        self.passes = 0  # UNet forward+backward calls (one per iteration, whatever the batch)
        self._host = _HostCopy(torch.stack([self.carried, self.nonfinite_step]))
        self._logged: set[int] = set()
        self._step_sizes: list[float] | None = None  # per step, from the scheduler's timesteps
        # Per pass: the rows it guided and each one's unscaled loss, NaN where the row was already
        # stopped; read back only when :attr:`losses` is asked for, after the run.
        self._history: list[tuple[tuple[int, ...], torch.Tensor]] = []

    @property
    def losses(self) -> list[list[float]]:
        """Per row, the unscaled loss of each pass that moved it (reads the device once)."""
        out: list[list[float]] = [[] for _ in range(len(self.carried))]
        if self._history:
            values = torch.cat([v for _, v in self._history]).tolist()
            i = 0
            for rows, v in self._history:
                for row, value in zip(rows, values[i : i + len(v)], strict=True):
                    if not math.isnan(value):
                        out[row].append(value)
                i += len(v)
        return out

    def __call__(self, latents: torch.Tensor, index: int, timestep: torch.Tensor) -> torch.Tensor:
        n_iter = self.params.iterations(index, self.steps)
        if not n_iter:
            return latents
        scale, threshold = self.params.loss_scale, self.params.loss_threshold
        # The step's one read from the device: the carried losses (and which rows hit a NaN).
        carried, nonfinite = self._host.read()
        self._log_nonfinite(nonfinite)
        if self.params.stale_loss_stop:
            active = tuple(row for row, loss in enumerate(carried) if loss / scale > threshold)
            if not active:
                return latents
        else:
            self.carried.fill_(INITIAL_LOSS)
            active = tuple(range(len(self.carried)))
        if self._step_sizes is None:  # the scheduler's timesteps are set by now: read them once
            timesteps = self.scheduler.timesteps.cpu()
            self._step_sizes = [step_size(self.scheduler, i, t) for i, t in enumerate(timesteps)]
        step = self._step_sizes[index]
        everyone = len(active) == len(self.carried)
        rows = None if everyone else torch.tensor(active).to(latents.device, non_blocking=True)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if rows is None else tensor[rows]

        kwargs = {}
        if self.grounding is not None:
            kwargs["cross_attention_kwargs"] = {"gligen": {k: pick(v) for k, v in self.grounding.items()}}
        embeddings = pick(self.cond_embeddings)
        z_rows = pick(latents)
        carried = pick(self.carried)
        nonfinite = pick(self.nonfinite_step)
        for _ in range(n_iter):
            with torch.enable_grad():
                z = z_rows.detach().float().requires_grad_(True)
                with self.store.guidance(GUIDANCE_KEYS) as maps:
                    with contextlib.suppress(StopForward):
                        self.unet(
                            self.scheduler.scale_model_input(z, timestep).to(self.unet.dtype),
                            timestep,
                            encoder_hidden_states=embeddings,
                            **kwargs,
                        )
                    losses = self.loss_fn(maps, index, active) * scale
                (grad,) = torch.autograd.grad(losses.sum(), z)
            self.passes += 1
            losses = losses.detach().float()
            live = carried / scale > threshold  # the reference's loop condition, row by row
            finite = torch.isfinite(losses) & torch.isfinite(grad).flatten(1).all(dim=1)
            moved = live & finite
            # A NaN would poison the latents; the reference would stop here too (NaN > x is false),
            # but only after applying the update.
            updated = (z.detach() - step * grad.float()).to(z_rows.dtype)
            z_rows = torch.where(moved.view(-1, *[1] * (z_rows.ndim - 1)), updated, z_rows)
            carried = torch.where(moved, losses, torch.where(live, torch.zeros_like(carried), carried))
            nonfinite = torch.where(live & ~finite, torch.full_like(nonfinite, index), nonfinite)
            self._history.append(
                (active, torch.where(moved, losses / scale, torch.full_like(losses, math.nan)))
            )
        if everyone:
            latents, self.carried, self.nonfinite_step = z_rows, carried, nonfinite
        else:
            latents = latents.clone()
            latents[rows] = z_rows
            self.carried[rows] = carried
            self.nonfinite_step[rows] = nonfinite
        self._host = _HostCopy(torch.stack([self.carried, self.nonfinite_step]))
        return latents

    @property
    def nonfinite(self) -> list[tuple[int, int]]:
        """``(row, step index)`` where a row's loss or gradient was not finite (reads the device)."""
        steps = self.nonfinite_step.tolist()
        self._log_nonfinite(steps)
        return [(row, int(step)) for row, step in enumerate(steps) if step >= 0]

    def _log_nonfinite(self, steps: list[float]) -> None:
        for row, step in enumerate(steps):
            if step >= 0 and row not in self._logged:
                self._logged.add(row)
                log.error(
                    "guidance loss or its gradient is not finite at step %d (row %d): guidance stops "
                    "for this sample; float16 weights are the usual cause (diffusion.dtype)",
                    step,
                    row,
                )


class _HostCopy:
    """A small device tensor copied to the host without waiting: on a GPU the copy is queued
    behind the work that computes it, and :meth:`read` waits only for that work."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._event = None
        if tensor.device.type == "cuda":
            self._host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = tensor.detach().clone()

    def read(self) -> list:
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()
