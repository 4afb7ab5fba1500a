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
from lmd_bot.layout.canvas import fit
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import (
    CancelCheck,
    ProgressCallback,
    Refine,
    RenderMode,
    RenderOutput,
    RenderProgress,
    RenderRequest,
    SdBaseline,
)
from lmd_bot.selfcheck.loop import DetectorFailedError, RoundCache
from lmd_bot.selfcheck.report import CheckReport

if TYPE_CHECKING:
    from lmd_bot.diffusion.cache import ObjectCache
    from lmd_bot.diffusion.pipeline import LmdPipeline
    from lmd_bot.diffusion.refine import Refiner
    from lmd_bot.selfcheck.loop import SelfChecker

log = logging.getLogger(__name__)


class RefineUnavailableError(RenderError):
    user_message = "Refinement is off on this bot; its operator can turn it on (diffusion.refine)."


def canvas_size(layout: SceneLayout, size: int) -> tuple[int, int]:
    """``(height, width)`` to render at: the layout's aspect, longer side ``size``, multiples of
    64 -- the canvas the scene was planned on when ``size`` is ``diffusion.size``."""
    canvas = fit(layout.width, layout.height, size)
    return canvas.height, canvas.width


class DiffusionRenderer:
    """Renders :class:`RenderRequest` objects with an :class:`LmdPipeline`; one render at a time."""

    def __init__(
        self,
        pipeline: LmdPipeline,
        *,
        size: int = 512,
        cache: ObjectCache | None = None,
        sd_baseline: SdBaseline = SdBaseline.CONTROLLER,
        checker: SelfChecker | None = None,
        refiner: Refiner | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.size = size
        self.cache = cache
        self.sd_baseline = sd_baseline
        self.checker = checker  # the self-check after lmd, lmd+ and fast renders (None: off)
        self.refiner = refiner  # SDXL refinement of the requests that ask (None: not loaded)

    def render(
        self,
        request: RenderRequest,
        progress: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        import torch

        from lmd_bot.diffusion.preview import latent_preview
        from lmd_bot.diffusion.spec import OVERALL_NEGATIVE, build_spec

        if request.refine and self.refiner is None:
            raise RefineUnavailableError("a refinement was asked of a worker without a refiner")
        if request.source_png is not None:
            return self._refine_only(request, progress, should_cancel)
        height, width = canvas_size(request.layout, self.size)
        spec = build_spec(request.layout, request.seed)

        def on_step(stage: str, step: int, total: int, latents) -> None:
            if progress is not None:
                progress(
                    RenderProgress(
                        step=step, total=total, stage=stage, draw_preview=lambda: latent_preview(latents)
                    )
                )

        def on_refine_step(step: int, total: int) -> None:
            if progress is not None:
                progress(RenderProgress(step=step, total=total, stage="refine"))

        device = self.pipeline.c.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        check: CheckReport | None = None
        check_stats = None
        try:
            images: list = []
            if request.candidates > 1:
                images, stats = self._candidates(request, height, width, on_step, should_cancel)
                image = images[0]
            elif request.mode is RenderMode.SD:
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
                    "should_cancel": should_cancel,
                }
                # A checked render pins its objects' runs, so that a retry reuses the others.
                cache = RoundCache(self.cache) if self.checker is not None else self.cache

                def run(spec, on_step=on_step):
                    if request.mode is RenderMode.FAST:
                        return self.pipeline.fast(spec, on_step=on_step, **common)
                    if request.mode is RenderMode.LMD_PLUS:
                        return self.pipeline.lmd_plus(spec, cache=cache, on_step=on_step, **common)
                    return self.pipeline.lmd(spec, cache=cache, on_step=on_step, **common)

                result = run(spec)
                image, stats = result.image, result.stats
                if self.checker is not None and (request.layout.objects or request.layout.negative):
                    image, check, check_stats = self._self_check(request, spec, image, run, on_step)
            if request.refine:
                refine_started = time.perf_counter()
                refined = [
                    self.refiner.refine(
                        each,
                        request.prompt or spec.prompt,
                        request.layout.negative,
                        seed=seed,
                        steps=request.steps,
                        on_step=on_refine_step,
                        should_cancel=should_cancel,
                    )
                    for each, seed in zip(images or [image], request.seeds, strict=True)
                ]
                image = refined[0]
                images = refined if images else []
                refine_seconds = time.perf_counter() - refine_started
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
        if check is not None:
            figures.update(
                {
                    "check_retries": float(check.retries),
                    "check_seconds": check.seconds,
                    "check_unet_forwards": float(check_stats.unet_forwards),
                    "check_guided_passes": float(check_stats.guided_passes),
                    "check_object_runs": float(check_stats.object_runs),
                    "check_object_cache_hits": float(check_stats.object_cache_hits),
                }
            )
        if request.refine:
            figures["refine_seconds"] = refine_seconds
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
        return RenderOutput(image=image, seconds=seconds, stats=figures, check=check, candidates=images)

    def _candidates(self, request: RenderRequest, height: int, width: int, on_step, should_cancel):
        """The layout at every seed of the request, one batched render; (images, stats).

        Not self-checked: the check's retries re-seed objects of one image, and a grid is a
        choice between seeds (the picked candidate keeps its seed for the scene's next rounds).
        """
        from lmd_bot.diffusion.blocks import RunStats
        from lmd_bot.diffusion.spec import OVERALL_NEGATIVE, build_spec

        common = {
            "steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "height": height,
            "width": width,
            "on_step": on_step,
            "should_cancel": should_cancel,
        }
        if request.mode is RenderMode.SD:
            stats = RunStats()
            reference = self.sd_baseline is SdBaseline.REFERENCE
            images, _ = self.pipeline.plain_batch(
                request.prompt or build_spec(request.layout, request.seed).prompt,
                OVERALL_NEGATIVE,
                seeds=request.seeds,
                stats=stats,
                scheduler=self.pipeline.reference_sd_scheduler() if reference else None,
                noise_on_device=reference,
                **common,
            )
            return images, stats
        specs = [build_spec(request.layout, seed) for seed in request.seeds]
        if request.mode is not RenderMode.FAST:
            common["cache"] = self.cache
        results = self.pipeline.candidates(specs, request.mode, **common)
        return [r.image for r in results], results[0].stats

    def _refine_only(
        self, request: RenderRequest, progress: ProgressCallback | None, should_cancel: CancelCheck | None
    ) -> RenderOutput:
        """The ✨ Refine button's job: refine a finished image, rendering nothing. The layout is
        not touched, so the objects stay where the render put them."""
        import io

        import torch
        from PIL import Image

        from lmd_bot.diffusion.spec import build_spec

        def on_step(step: int, total: int) -> None:
            if progress is not None:
                progress(RenderProgress(step=step, total=total, stage="refine"))

        started = time.perf_counter()
        try:
            with Image.open(io.BytesIO(request.source_png)) as source:
                source.load()
                image = self.refiner.refine(
                    source,
                    request.prompt or build_spec(request.layout, request.seed).prompt,
                    request.layout.negative,
                    seed=request.seed,
                    steps=request.steps,
                    on_step=on_step,
                    should_cancel=should_cancel,
                )
        except LmdError:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise OutOfMemoryError(f"out of memory refining: {exc}") from exc
            log.exception("refinement failed")
            raise RenderError(f"refinement failed: {type(exc).__name__}: {exc}") from exc
        seconds = time.perf_counter() - started
        return RenderOutput(image=image, seconds=seconds, stats={"refine_seconds": seconds})

    def _self_check(self, request: RenderRequest, spec, image, run, on_step):
        """The self-check of a rendered image (lmd, lmd+: with retries; fast: findings only).

        Returns the kept image, the report, and the retries' summed UNet work. A detector that
        fails leaves the image as rendered and says so in the report; a failed retry (out of
        memory, cancelled) fails the render as any render step would.
        """
        from lmd_bot.diffusion.blocks import RunStats

        retry_stats = RunStats()

        def rerender(retry_spec):
            def step(_stage, *args):
                if on_step is not None:
                    on_step("self-check", *args)

            result = run(retry_spec, on_step=step)
            for name in ("unet_forwards", "guided_passes", "object_runs", "object_cache_hits"):
                setattr(retry_stats, name, getattr(retry_stats, name) + getattr(result.stats, name))
            return result.image

        fixable = request.mode in (RenderMode.LMD, RenderMode.LMD_PLUS)
        try:
            outcome = self.checker.run(request.layout, spec, image, rerender if fixable else None)
        except DetectorFailedError as exc:
            log.exception("the self-check's detector failed; the image is kept as rendered")
            report = CheckReport(
                detector=self.checker.detector.name,
                objects=len(request.layout.objects),
                found=0,
                error=str(exc),
            )
            return image, report, retry_stats
        return outcome.image, outcome.report, retry_stats


def _peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (it never goes down)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


def build_checker(settings: DiffusionSettings) -> SelfChecker | None:
    """The self-check the settings ask for (``diffusion.self_check`` and ``check_detector``), or
    None. A detector that cannot load turns the check off with an error in the log: the bot
    still renders."""
    from lmd_bot.selfcheck.detectors import CheckDetectorKind, build_check_detector
    from lmd_bot.selfcheck.loop import SelfChecker

    kind = CheckDetectorKind(settings.check_detector)
    if not settings.self_check or kind is CheckDetectorKind.NONE:
        return None
    try:
        detector = build_check_detector(kind, settings.check_detector_model, device=settings.device)
    except LmdError as exc:
        log.error("the self-check is off: its detector could not load (%s)", exc)
        return None
    return SelfChecker(detector, max_retries=settings.check_retries)


def build_renderer(
    settings: DiffusionSettings,
    *,
    tiny: bool = False,
    sd_baseline: SdBaseline = SdBaseline.CONTROLLER,
    check: bool = False,
) -> DiffusionRenderer:
    """A renderer from the settings; ``tiny=True`` builds tiny random models (no download);
    ``sd_baseline`` says what the ``sd`` mode runs (the benchmark asks for the reference's);
    ``check``: with the self-check the settings ask for (:func:`build_checker`), built after the
    models load: its detector is a download of its own, and offline its retries took minutes
    before a missing image model was reported."""
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
    refiner = None
    if settings.refine is not Refine.OFF:  # loaded once, for every request that asks
        import torch

        from lmd_bot.diffusion.refine import Refiner

        if tiny:
            from lmd_bot.diffusion.tiny import tiny_refiner_pipeline

            refiner_pipe = tiny_refiner_pipeline()
        else:
            from lmd_bot.diffusion.loading import load_refiner

            # The reference runs the refiner in half precision on the GPU.
            cuda = components.device.type == "cuda"
            refiner_pipe = load_refiner(
                settings, components.device, torch.float16 if cuda else components.dtype
            )
        refiner = Refiner(refiner_pipe, strength=settings.refine_strength, size=settings.refine_size)
    checker = build_checker(settings) if check else None
    return DiffusionRenderer(
        pipeline, size=settings.size, cache=cache, sd_baseline=sd_baseline, checker=checker, refiner=refiner
    )
