"""The renderer interface: what the job queue, the bot and the benchmark ask of stage 2.

A renderer is synchronous and blocking: it runs inside the GPU worker (a separate process), never
on the bot's event loop. The controller (:mod:`lmd_bot.diffusion`) implements it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.selfcheck.report import CheckReport

if TYPE_CHECKING:
    from PIL import Image


class RenderMode(StrEnum):
    LMD_PLUS = "lmd+"  # LMD's controller on GLIGEN (the default)
    LMD = "lmd"  # LMD's controller on SD v1.5
    FAST = "fast"  # one GLIGEN pass with box guidance: drafts
    SD = "sd"  # plain Stable Diffusion from the original prompt: the baseline


class Refine(StrEnum):
    """When images get the SDXL refinement (``diffusion.refine``, and per server ``/settings``)."""

    OFF = "off"  # never (the bot-wide "off" also means the worker loads no refiner)
    ON = "on"  # every render
    BUTTON = "button"  # on request: a ✨ Refine button on each result


class SdBaseline(StrEnum):
    """What the ``sd`` mode runs."""

    # The reference's SD baseline: the checkpoint's own scheduler (PNDM for SD v1.5), noise drawn
    # by a generator on the device, float32; what the published SD column was measured with.
    REFERENCE = "reference"
    # The controller's DDIM scheduler and CPU noise: the same sampler as the other modes.
    CONTROLLER = "controller"


MAX_CANDIDATES = 4  # a grid of 2x2


def candidate_seeds(seed: int, n: int) -> list[int]:
    """The seeds of ``n`` candidates of the scene seed ``seed``: the first is ``seed`` itself (so
    one candidate is the plain render), the others derive from it by a hash, deterministic and
    below 2**32 like the seeds people type (and ``/imagine seed:`` takes)."""
    seeds = [seed]
    k = 1
    while len(seeds) < n:
        digest = hashlib.blake2b(f"lmd-candidate:{seed}:{k}".encode(), digest_size=4).digest()
        derived = int.from_bytes(digest, "big")
        if derived not in seeds:
            seeds.append(derived)
        k += 1
    return seeds


class RenderRequest(BaseModel):
    # bytes travel as base64 in JSON (the worker's pipe, a Redis queue)
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    layout: SceneLayout
    prompt: str = ""  # the user's original prompt (``sd`` mode draws from it)
    mode: RenderMode = RenderMode.LMD_PLUS
    seed: int = Field(0, ge=0, lt=2**63)
    steps: int = Field(50, ge=1, le=150)
    guidance_scale: float = Field(7.5, ge=0, le=30)
    # SDXL refinement (docs/method.md, "SDXL refinement"): after the render, or, with
    # ``source_png`` (a round's finished image, the ✨ Refine button), instead of it: that image is
    # refined with this request's prompt, negative prompt, seed and steps; nothing is re-rendered.
    refine: bool = False
    source_png: bytes | None = None
    # Render the layout at this many seeds as one batched job (``seed`` and the ones derived from
    # it: :func:`candidate_seeds`), for the user to pick one.
    candidates: int = Field(1, ge=1, le=MAX_CANDIDATES)

    @model_validator(mode="after")
    def _source_is_refined(self) -> RenderRequest:
        if self.source_png is not None and not self.refine:
            raise ValueError("source_png is the image to refine: it needs refine=True")
        if self.source_png is not None and self.candidates > 1:
            raise ValueError("source_png is one image to refine: it has no candidates")
        return self

    @property
    def seeds(self) -> list[int]:
        return candidate_seeds(self.seed, self.candidates)


@dataclass(frozen=True)
class RenderProgress:
    step: int
    total: int
    stage: str = "overall"  # "objects" while per-object runs go, then "overall", then "refine" if on
    # Draws a cheap, small preview from the latents of this step. On demand, because most progress
    # is never shown (the worker sends a few a second): only a preview drawn costs its device copy.
    draw_preview: Callable[[], Image.Image] | None = field(default=None, compare=False, repr=False)

    def preview(self) -> Image.Image | None:
        return self.draw_preview() if self.draw_preview is not None else None


@dataclass
class RenderOutput:
    image: Image.Image
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)  # unet passes, peak memory, cache hits
    check: CheckReport | None = None  # the self-check's findings, when one ran
    # With ``request.candidates > 1``: every candidate's image in the order of ``request.seeds``
    # (``image`` is the first); empty for a single image.
    candidates: list[Image.Image] = field(default_factory=list)


ProgressCallback = Callable[[RenderProgress], None]
CancelCheck = Callable[[], bool]


class Renderer(Protocol):
    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        """Render the request. Raises :class:`lmd_bot.errors.CancelledError` when ``should_cancel``
        returns true between steps, :class:`lmd_bot.errors.OutOfMemoryError` on OOM, and
        :class:`lmd_bot.errors.RenderError` for any other failure."""
        ...
