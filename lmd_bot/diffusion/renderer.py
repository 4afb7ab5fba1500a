"""The :class:`lmd_bot.rendering.Renderer` of stage 2, and how to build one from the settings.

Modes: ``lmd+`` (the LMD controller on GLIGEN, the default), ``lmd`` (the LMD controller on SD
v1.5), ``fast`` (one GLIGEN pass with box guidance: drafts) and ``sd`` (plain SD from the user's
original prompt with the reference's default quality negative prompt and no layout: the baseline;
a request without a prompt falls back to the layout's synthetic prompt). ``sd`` runs the
controller's DDIM sampler, or with :attr:`SdBaseline.REFERENCE` (the benchmark's default) the
reference's SD baseline: SD v1.5's own PNDM scheduler and noise drawn on the device.

The renderer owns the per-object cache (:class:`lmd_bot.diffusion.cache.ObjectCache`): the GPU
worker keeps one renderer across jobs, so a follow-up round of a scene reuses the runs of the
objects it did not change.

Importing this module is cheap: torch and the models load in :func:`build_renderer` and
:meth:`DiffusionRenderer.render`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING

from lmd_bot.config import DiffusionSettings
from lmd_bot.errors import LmdError, OutOfMemoryError, RenderError, is_out_of_memory
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import (
    CancelCheck,
    ProgressCallback,
    Renderer,
    RenderMode,
    RenderOutput,
    RenderProgress,
    RenderRequest,
    SdBaseline,
)

if TYPE_CHECKING:
    from lmd_bot.diffusion.cache import ObjectCache
    from lmd_bot.diffusion.pipeline import LmdPipeline

log = logging.getLogger(__name__)


def canvas_size(layout: SceneLayout, size: int) -> tuple[int, int]:
    """``(height, width)`` to render at: the layout's aspect, longer side ``size``, multiples of 64."""
    if layout.width == layout.height:
        return size, size
    scale = size / max(layout.width, layout.height)
    return (
        max(64, round(layout.height * scale / 64) * 64),
        max(64, round(layout.width * scale / 64) * 64),
    )


class DiffusionRenderer:
    """Renders :class:`RenderRequest` objects with an :class:`LmdPipeline`; one render at a time."""

    def __init__(
        self,
        pipeline: LmdPipeline,
        *,
        size: int = 512,
        cache: ObjectCache | None = None,
        sd_baseline: SdBaseline = SdBaseline.CONTROLLER,
    ) -> None:
        self.pipeline = pipeline
        self.size = size
        self.cache = cache
        self.sd_baseline = sd_baseline

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        import torch

        from lmd_bot.diffusion.preview import latent_preview
        from lmd_bot.diffusion.spec import OVERALL_NEGATIVE, build_spec

        height, width = canvas_size(request.layout, self.size)
        spec = build_spec(request.layout, request.seed)

        def on_step(stage: str, step: int, total: int, latents) -> None:
            if progress is not None:
                progress(RenderProgress(step=step, total=total, stage=stage, preview=latent_preview(latents)))

        device = self.pipeline.c.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        try:
            if request.mode is RenderMode.SD:
                from lmd_bot.diffusion.blocks import RunStats

                stats = RunStats()
                reference = self.sd_baseline is SdBaseline.REFERENCE
                image, _ = self.pipeline.plain(
                    request.prompt or spec.prompt,
                    OVERALL_NEGATIVE,
                    seed=request.seed,
                    steps=request.steps,
                    guidance_scale=request.guidance_scale,
                    height=height,
                    width=width,
                    on_step=on_step,
                    should_cancel=should_cancel,
                    stats=stats,
                    scheduler=self.pipeline.reference_sd_scheduler() if reference else None,
                    noise_on_device=reference,
                )
            else:
                common = {
                    "steps": request.steps,
                    "guidance_scale": request.guidance_scale,
                    "height": height,
                    "width": width,
                    "on_step": on_step,
                    "should_cancel": should_cancel,
                }
                if request.mode is RenderMode.FAST:
                    result = self.pipeline.fast(spec, **common)
                elif request.mode is RenderMode.LMD_PLUS:
                    result = self.pipeline.lmd_plus(spec, cache=self.cache, **common)
                else:
                    result = self.pipeline.lmd(spec, cache=self.cache, **common)
                image, stats = result.image, result.stats
        except LmdError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                raise OutOfMemoryError(f"out of memory rendering {width}x{height}: {exc}") from exc
            log.exception("render failed")
            raise RenderError(f"render failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - started
        figures = {
            "unet_forwards": float(stats.unet_forwards),
            "guided_passes": float(stats.guided_passes),
            "sam_calls": float(stats.sam_calls),
            "object_runs": float(stats.object_runs),
            "object_cache_hits": float(stats.object_cache_hits),
            "object_seconds": stats.object_seconds,
            "guidance_nonfinite": float(stats.guidance_nonfinite),
        }
        if stats.guidance_nonfinite:
            log.error(
                "render of seed %d (%s): guidance hit NaN/inf %d times and stopped for those samples",
                request.seed,
                request.mode,
                stats.guidance_nonfinite,
            )
        if device.type == "cuda":
            figures["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        else:
            figures["peak_rss_mb"] = _peak_rss_mb()
        return RenderOutput(image=image, seconds=seconds, stats=figures)


def _peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (it never goes down)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def build_renderer(
    settings: DiffusionSettings, *, tiny: bool = False, sd_baseline: SdBaseline = SdBaseline.CONTROLLER
) -> Renderer:
    """A renderer from the settings; ``tiny=True`` builds tiny random models (no download);
    ``sd_baseline`` says what the ``sd`` mode runs (the benchmark asks for the reference's)."""
    from pathlib import Path

    from lmd_bot.diffusion.cache import ObjectCache
    from lmd_bot.diffusion.pipeline import LmdPipeline

    if tiny:
        from lmd_bot.diffusion.tiny import tiny_components

        components = tiny_components(sam=settings.use_sam, gligen=bool(settings.gligen_model))
    else:
        from lmd_bot.diffusion.loading import load_components

        components = load_components(settings)
    cache = ObjectCache(
        settings.object_cache_mb * 2**20,
        directory=Path(settings.object_cache_dir) if settings.object_cache_dir else None,
        max_disk_bytes=settings.object_cache_disk_mb * 2**20,
    )
    pipeline = LmdPipeline(
        components,
        object_batch_size=settings.object_batch_size,
        compile_guidance=settings.compile_guidance,
    )
    return DiffusionRenderer(pipeline, size=settings.size, cache=cache, sd_baseline=sd_baseline)
