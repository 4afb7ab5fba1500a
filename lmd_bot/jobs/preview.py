"""PREVIEW ONLY, no diffusion: a renderer that paints the planned boxes as flat shapes.

For trying the bot, ``lmd-bot chat`` and ``lmd-bot bench bot`` on a machine without a GPU or model
weights (``queue.renderer = "preview"``). Every picture is stamped "PREVIEW" so nobody mistakes it
for a rendering. It honours the request's seed (the backdrop's tint), steps (one progress call
each) and cancellation, so the queue behaves as it does with the real renderer. A refinement
(``request.refine``) doubles the picture's size, as the SDXL refiner's 512 -> 1024 does, and
stamps it "refined"; a ✨ refinement of a finished image (``request.source_png``) does only that.
"""

from __future__ import annotations

import io
import random
import time

from PIL import Image, ImageDraw

from lmd_bot.errors import CancelledError
from lmd_bot.overlay import object_color
from lmd_bot.rendering import CancelCheck, ProgressCallback, RenderOutput, RenderProgress, RenderRequest


class PreviewRenderer:
    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        start = time.perf_counter()
        if request.source_png is not None:
            with Image.open(io.BytesIO(request.source_png)) as source:
                image = _refined(source.convert("RGB"), request, progress, should_cancel)
            return RenderOutput(image=image, seconds=time.perf_counter() - start, stats={"preview": 1.0})
        _steps("overall", request.steps, progress, should_cancel)
        images = [self._draw(request.layout, seed) for seed in request.seeds]
        if request.refine:
            images = [_refined(image, request, progress, should_cancel) for image in images]
        return RenderOutput(
            image=images[0],
            seconds=time.perf_counter() - start,
            stats={"preview": 1.0},
            candidates=images if request.candidates > 1 else [],
        )

    @staticmethod
    def _draw(layout, seed: int) -> Image.Image:
        rng = random.Random(seed)
        base = tuple(rng.randrange(40, 110) for _ in range(3))
        image = Image.new("RGB", (layout.width, layout.height), base)
        draw = ImageDraw.Draw(image)
        for obj in layout.objects:
            b = obj.box
            draw.rounded_rectangle([b.x, b.y, b.x1, b.y1], radius=8, fill=object_color(obj.id))
        draw.rectangle([0, 0, layout.width, 18], fill=(0, 0, 0))
        draw.text((6, 3), "PREVIEW - no diffusion model", fill=(255, 255, 255))
        return image


def _steps(
    stage: str, total: int, progress: ProgressCallback | None, should_cancel: CancelCheck | None
) -> None:
    for step in range(1, total + 1):
        if should_cancel is not None and should_cancel():
            raise CancelledError(f"cancelled at step {step}")
        if progress is not None:
            progress(RenderProgress(step=step, total=total, stage=stage))


def _refined(
    image: Image.Image,
    request: RenderRequest,
    progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
) -> Image.Image:
    _steps("refine", max(1, request.steps // 3), progress, should_cancel)
    bigger = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(bigger)
    draw.rectangle([0, bigger.height - 20, bigger.width, bigger.height], fill=(0, 0, 0))
    draw.text((6, bigger.height - 17), "PREVIEW - refined (no SDXL refiner)", fill=(255, 255, 255))
    return bigger
