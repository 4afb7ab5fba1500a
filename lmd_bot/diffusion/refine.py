"""SDXL refinement after LMD / LMD+, as the reference's ``--sdxl`` option does it
(docs/method.md, "SDXL refinement").

The stage-2 image is resized (Lanczos) to ``diffusion.refine_size`` on its longer side, keeping
the scene's aspect (sides multiples of 64; the reference's 512² becomes 1024²), then the SDXL
refiner runs image-to-image on it: ``strength`` (``diffusion.refine_strength``, the reference's
``--sdxl-step-ratio``, default 0.3) is the share of the denoising steps it redoes, so the layout,
the objects' places and shapes, survive and only detail and texture change. The prompt is the
user's own; the negative prompt is the scene's plus the reference's list that steers away from
painterly looks; the seed is the scene's plus the reference's offset.

The refiner pipeline is diffusers' ``StableDiffusionXLImg2ImgPipeline`` with only the second
(OpenCLIP bigG) text encoder, which is what the refiner checkpoint holds; it is loaded once per
worker (:func:`lmd_bot.diffusion.loading.load_refiner`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmd_bot.errors import CancelledError
from lmd_bot.layout.canvas import fit

if TYPE_CHECKING:
    from PIL import Image

# The reference adds these to the scene's negative prompt for the refiner pass.
REFINE_NEGATIVE = (
    "drawing, painting, crayon, sketch, graphite, impressionist, noisy, blurry, soft, deformed, ugly"
)
# The reference seeds the refiner with the scene's seed plus this.
SEED_OFFSET = 7890


def refine_negative(negative: str) -> str:
    return f"{negative}, {REFINE_NEGATIVE}" if negative else REFINE_NEGATIVE


class Refiner:
    """Refines rendered images with an SDXL refiner pipeline; one call at a time."""

    def __init__(self, pipe, *, strength: float = 0.3, size: int = 1024) -> None:
        self.pipe = pipe
        self.strength = strength
        self.size = size
        pipe.set_progress_bar_config(disable=True)

    def refine(
        self,
        image: Image.Image,
        prompt: str,
        negative: str,
        *,
        seed: int,
        steps: int,
        on_step=None,
        should_cancel=None,
    ) -> Image.Image:
        """``image`` at the refine size, refined. ``steps`` is the full schedule's length: the
        refiner runs ``round(steps * strength)`` of them. ``on_step(step, total)`` reports progress;
        ``should_cancel()`` stops it between steps (:class:`CancelledError`). It always redoes at
        least one step."""
        import torch
        from PIL import Image

        canvas = fit(image.width, image.height, self.size)
        upscaled = image.convert("RGB").resize((canvas.width, canvas.height), Image.Resampling.LANCZOS)
        # img2img redoes int(steps * strength) of the schedule; a short schedule would redo none
        # (and diffusers fails on an empty one): lengthen it until one step is redone.
        while int(steps * self.strength) < 1:
            steps += 1
        total = int(steps * self.strength)
        cancelled = False

        def step_end(pipe, step: int, timestep, kwargs):
            nonlocal cancelled
            if on_step is not None:
                on_step(step + 1, total)
            if should_cancel is not None and should_cancel():
                cancelled = True
                pipe._interrupt = True
            return kwargs

        device = getattr(self.pipe, "_execution_device", None) or torch.device("cpu")
        generator = torch.Generator("cpu" if device.type == "mps" else device).manual_seed(seed + SEED_OFFSET)
        out = self.pipe(
            prompt=prompt,
            negative_prompt=refine_negative(negative),
            image=upscaled,
            strength=self.strength,
            num_inference_steps=steps,
            generator=generator,
            callback_on_step_end=step_end,
        ).images[0]
        if cancelled:
            raise CancelledError("cancelled while refining")
        return out
