"""PREVIEW ONLY, no diffusion: a renderer that paints the planned boxes as flat shapes.

For trying the bot, ``lmd-bot chat`` and ``lmd-bot bench bot`` on a machine without a GPU or model
weights (``queue.renderer = "preview"``). Every picture is stamped "PREVIEW" so nobody mistakes it
for a rendering. It honours the request's seed (the backdrop's tint), steps (one progress call
each) and cancellation, so the queue behaves as it does with the real renderer.
"""

from __future__ import annotations

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
        layout = request.layout
        rng = random.Random(request.seed)
        base = tuple(rng.randrange(40, 110) for _ in range(3))
        image = Image.new("RGB", (layout.width, layout.height), base)
        draw = ImageDraw.Draw(image)
        for step in range(1, request.steps + 1):
            if should_cancel is not None and should_cancel():
                raise CancelledError(f"cancelled at step {step}")
            if progress is not None:
                progress(RenderProgress(step=step, total=request.steps))
        for obj in layout.objects:
            b = obj.box
            draw.rounded_rectangle([b.x, b.y, b.x1, b.y1], radius=8, fill=object_color(obj.id))
        draw.rectangle([0, 0, layout.width, 18], fill=(0, 0, 0))
        draw.text((6, 3), "PREVIEW - no diffusion model", fill=(255, 255, 255))
        return RenderOutput(image=image, seconds=time.perf_counter() - start, stats={"preview": 1.0})
