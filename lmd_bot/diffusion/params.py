"""The controller's settings, one frozen model per mode; the defaults are the reference's.

Where each value comes from, and why it has that value, is in docs/method.md ("Hyperparameters").
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.diffusion.guidance import GuidanceParams
from lmd_bot.diffusion.masks import MaskParams

# What the GLIGEN fusers see during a guidance pass: "null" (the learned null tokens, the
# reference's LMD+ quirk), "boxes" (the conditional grounding) or "none" (fusers skipped, as
# diffusers' community pipeline does). See docs/method.md, "LMD+".
GuidanceGrounding = Literal["null", "boxes", "none"]


class ObjectSchedule(StrEnum):
    """How far each per-object run denoises (docs/method.md, "Per-object stage")."""

    # With SAM: up to the last step the overall run reads (its frozen latents, its guided steps'
    # transfer maps), SAM given the model's prediction of the clean image at that step. Without
    # SAM (masks from the attention to the last step) as FULL.
    USED = "used"
    FULL = "full"  # every step, the mask from the final image: the reference


class LmdParams(BaseModel):
    """``lmd``: the reference's ``generation/lmd.py`` defaults; :meth:`lmd_plus` those of
    ``generation/lmd_plus.py``."""

    model_config = ConfigDict(frozen=True)

    object_guidance: GuidanceParams = GuidanceParams()
    overall_guidance: GuidanceParams = GuidanceParams()
    transfer_weight: float = Field(2.0, ge=0)  # attention transfer in the overall run; 0: off
    frozen_step_ratio: float = Field(0.5, ge=0, le=1)
    blending_ratio: float = Field(0.01, ge=0, le=1)  # the object's own noise inside its box
    center_objects: bool = True  # generate each object in a centred box (LMD); else in place
    floor_padding: float = Field(0.2, ge=0, lt=1)  # centred box's bottom edge at 1 - this
    align_objects: bool = True  # move each object's mask centroid to its box (LMD)
    sam_prompt: Literal["point", "box"] = "point"  # the attention peak (LMD) or the box (LMD+)
    sam_start_ratio: float = Field(0.2, ge=0, lt=1)  # token map averaged from step 10 of 50 on
    masks: MaskParams = MaskParams()
    object_schedule: ObjectSchedule = ObjectSchedule.USED
    # GLIGEN scheduled sampling: fusers on for this share of the steps, in the per-object and the
    # overall runs (the reference uses 0.4 for both). None: plain SD, no grounding.
    gligen_beta: float | None = Field(None, ge=0, le=1)
    guidance_grounding: GuidanceGrounding = "null"
    # At the start an object brings its noise into its mask's bounding box grown by one cell; where
    # its move left cells without data, the reference copies their zeros, lmd-bot keeps the
    # background's noise (True reproduces the reference; docs/method.md, "Composition").
    copy_vacated_noise: bool = False
    # On CUDA, run under float16 autocast over the (float32) weights, as the reference runs LMD+;
    # its LMD runs without. Latents, scheduler steps and guidance updates stay float32 either way.
    autocast: bool = False

    @classmethod
    def lmd_plus(cls) -> LmdParams:
        return cls(
            object_guidance=GuidanceParams(max_index_step=0),  # "it did not help" (reference)
            blending_ratio=0.1,
            center_objects=False,
            align_objects=False,
            sam_prompt="box",
            gligen_beta=0.4,
            autocast=True,
        )


class FastParams(BaseModel):
    """``fast``: diffusers' community LMD+ pipeline's guidance defaults, on the synthetic prompt,
    with LMD+'s scheduled sampling."""

    model_config = ConfigDict(frozen=True)

    guidance: GuidanceParams = GuidanceParams(
        loss_scale=20.0, max_iter=(3,) * 5 + (2,) * 5 + (1,) * 5, max_index_step=15, bg_weight=1.0
    )
    gligen_beta: float = Field(0.4, ge=0, le=1)
    guidance_grounding: GuidanceGrounding = "none"
    autocast: bool = True  # as LMD+ (see LmdParams.autocast)
