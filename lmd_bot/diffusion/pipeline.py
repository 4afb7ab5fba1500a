"""LMD's stage 2 as numbered steps over shared blocks: ``lmd`` (the controller on SD), ``lmd+``
(on GLIGEN), ``fast`` (one guided GLIGEN pass) and plain SD.

The controller (docs/method.md, "Stage 2"); the order of operations matters and is kept:

1. each object is generated alone (:mod:`.object_stage`), or taken from the cache
   (:mod:`.cache`) when nothing that determines its run changed;
2. each object's latents, mask and maps move by whole shift quanta (64 px for SD) to its box
   (``lmd``: the mask's centroid to the box centre; ``lmd+``: nothing for a fresh run, which is
   already in place; a cached run generated before the box moved shifts by the box's move, quantized);
3. the trajectories are composed over the background noise, the largest mask first;
4. the overall run denoises from the composed noise with energy + attention-transfer guidance for
   the first 60% of the steps, and for the first half, after every scheduler step, pins the
   objects' cells to their per-object latents of the next step. In ``lmd+`` it is a GLIGEN run
   grounding every box with its overall phrase ("two cats" for each cat), fusers on for the first
   40% of the steps.

GLIGEN's guidance-pass quirk: the reference's guidance forward gets the *unconditional* half's
grounding inputs, whose masks are zero, so while the fusers are on they see only the learned null
tokens, not the boxes. ``lmd+`` keeps this (``guidance_grounding = "null"``) because the published
LMD+ numbers were measured with it; ``fast`` skips the fusers in its guidance pass as diffusers'
community pipeline does.

Candidates (one layout at up to 4 seeds, :meth:`LmdPipeline.candidates`) run every step above
once for all the seeds, a row each (docs/method.md, "Candidates"); a single render is a batch of
one.

Plain SD (the ``sd`` mode, and a layout without objects in ``lmd``) is the denoising block without
any conditioning, and matches diffusers' ``StableDiffusionPipeline`` given the same parts and
seed. A layout without objects in ``lmd+`` or ``fast`` is a GLIGEN pass with every slot empty: the
fusers run on the null grounding tokens for the first 40% of the steps, as the reference's does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY, attention_capture
from lmd_bot.diffusion.blocks import Blocks, CancelCheck, Conditioning, Progress, RunStats, StepCallback
from lmd_bot.diffusion.cache import ObjectCache, object_run_key
from lmd_bot.diffusion.components import Components
from lmd_bot.diffusion.gligen import check_object_count, fuser_steps, with_unconditional
from lmd_bot.diffusion.guidance import BackwardGuidance
from lmd_bot.diffusion.latents import (
    Composition,
    box_offset,
    compose,
    quantized_offset,
    shift_quantum_px,
    stack_compositions,
)
from lmd_bot.diffusion.losses import LayoutLoss, PhraseTarget
from lmd_bot.diffusion.object_stage import (
    ObjectJob,
    ObjectStage,
    batches,
    cached_results,
    frozen_steps,
    object_steps,
)
from lmd_bot.diffusion.objects import ObjectRun, place
from lmd_bot.diffusion.params import FastParams, LmdParams
from lmd_bot.diffusion.spec import GenerationSpec
from lmd_bot.diffusion.tokens import TokenSpan, token_span
from lmd_bot.errors import RenderError
from lmd_bot.layout.geometry import centered_nbox
from lmd_bot.rendering import RenderMode

__all__ = ["FastParams", "LmdParams", "LmdPipeline", "LmdResult", "RunStats"]

RECORD_KEYS = (SAM_KEY, *GUIDANCE_KEYS)


@dataclass
class LmdResult:
    image: Image.Image
    latents: torch.Tensor
    objects: list[ObjectRun]
    composition: Composition | None  # None without per-object runs
    overall_losses: list[float]
    stats: RunStats


class LmdPipeline:
    """Renders prompts (plain SD) and generation specs (``lmd``, ``lmd+``, ``fast``) with one set of
    components. ``object_batch_size`` objects share each per-object UNet call."""

    def __init__(
        self,
        components: Components,
        *,
        lmd: LmdParams | None = None,
        lmd_plus: LmdParams | None = None,
        fast: FastParams | None = None,
        object_batch_size: int = 8,
        compile_guidance: bool = False,
    ) -> None:
        if object_batch_size < 1:
            raise ValueError("object_batch_size must be at least 1")
        self.c = components
        self.blocks = Blocks(components, compile_guidance=compile_guidance)
        self.lmd_params = lmd or LmdParams()
        self.lmd_plus_params = lmd_plus or LmdParams.lmd_plus()
        self.fast_params = fast or FastParams()
        self.object_batch_size = object_batch_size

    # --- checks -------------------------------------------------------------------------------

    @staticmethod
    def check_size(height: int, width: int) -> None:
        if height % 64 or width % 64 or height < 64 or width < 64:
            raise RenderError(f"image size {width}x{height} must be positive multiples of 64")

    @property
    def gligen_unet(self):
        if self.c.gligen_unet is None:
            raise RenderError(
                "no GLIGEN model is loaded (diffusion.gligen_model is empty)",
                user_message="The 'lmd+' and 'fast' modes aren't available on this bot; use 'lmd' or 'sd'.",
            )
        return self.c.gligen_unet

    def _latent_hw(self, height: int, width: int) -> tuple[int, int]:
        f = self.c.vae_scale_factor
        return (height // f, width // f)

    def _phrase_tokens(self, spec: GenerationSpec) -> list[TokenSpan]:
        return [token_span(self.c.tokenizer, spec.prompt, p.span) for p in spec.phrases]

    # --- plain Stable Diffusion ---------------------------------------------------------------

    def reference_sd_scheduler(self):
        """The scheduler SD v1.5's checkpoint names, PNDM (PLMS steps only), on the controller's
        noise schedule: what diffusers' ``StableDiffusionPipeline`` and so the reference's SD
        baseline sample with."""
        from diffusers import PNDMScheduler

        return PNDMScheduler.from_config(self.c.scheduler.config, skip_prk_steps=True)

    def plain(self, prompt: str, negative: str, *, seed: int, **kwargs) -> tuple[Image.Image, torch.Tensor]:
        """SD from ``prompt`` with ``negative``; keyword arguments as :meth:`plain_batch`'s.
        Returns ``(image, final latents)``."""
        images, latents = self.plain_batch(prompt, negative, seeds=[seed], **kwargs)
        return images[0], latents

    @torch.no_grad()
    def plain_batch(
        self,
        prompt: str,
        negative: str,
        *,
        seeds: Sequence[int],
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        unet=None,
        scheduler=None,
        noise_on_device: bool = False,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        stats: RunStats | None = None,
    ) -> tuple[list[Image.Image], torch.Tensor]:
        """SD from ``prompt`` with ``negative`` at each of ``seeds``, one batch (on ``unet``,
        default SD's; a GLIGEN UNet runs ungrounded, fusers off), with ``scheduler`` (default the
        controller's DDIM); returns ``(images, final latents (n, C, h, w))``."""
        # 0. Check inputs
        self.check_size(height, width)
        stats = stats if stats is not None else RunStats()
        scheduler = self.c.scheduler if scheduler is None else scheduler
        scheduler.set_timesteps(steps, device=self.c.device)  # PNDM takes one step more than asked
        progress = Progress(len(scheduler.timesteps), on_step, should_cancel)
        # 1. Encode
        do_cfg = guidance_scale > 1
        embeddings = rows(self.blocks.encode_prompt(prompt, negative, do_cfg), len(seeds), do_cfg)
        latent_hw = self._latent_hw(height, width)
        noise = torch.cat(
            [self.blocks.initial_latents(seed, latent_hw, on_device=noise_on_device) for seed in seeds]
        )
        # 2. Denoise
        latents = self.blocks.denoise(
            self.c.unet if unet is None else unet,
            self.blocks.to_model(noise, scheduler),
            embeddings,
            steps=steps,
            guidance_scale=guidance_scale,
            how=Conditioning(),
            stats=stats,
            progress=progress,
            scheduler=scheduler,
        )
        # 3. Decode
        return self._decode_rows(latents), latents

    def _decode_rows(self, latents: torch.Tensor) -> list[Image.Image]:
        return [self.blocks.decode(latents[i : i + 1]) for i in range(latents.shape[0])]

    @torch.no_grad()
    def _background_only(
        self,
        specs: Sequence[GenerationSpec],
        unet,
        gligen_beta: float | None,
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        stats: RunStats,
        progress: Progress,
    ) -> list[LmdResult]:
        """A layout without objects: SD on the background and negative prompt, one row per spec.

        On GLIGEN (``gligen_beta`` set) the fusers still run for the first ``beta`` share of the
        steps, fed only null grounding tokens, as the reference's GLIGEN pass with no boxes does:
        the learned null tokens change the image, so skipping the fusers would not be the same.
        """
        # 1. Encode
        spec, n, do_cfg = specs[0], len(specs), guidance_scale > 1
        embeddings = rows(self.blocks.encode_prompt(spec.prompt, spec.negative, do_cfg), n, do_cfg)
        how = Conditioning()
        if gligen_beta is not None:
            how.grounding = self.blocks.empty_grounding(2 * n if do_cfg else n)
            how.fuser_steps = fuser_steps(gligen_beta, steps)
        latent_hw = self._latent_hw(height, width)
        noise = torch.cat([self.blocks.initial_latents(s.seed, latent_hw) for s in specs])
        # 2. Denoise
        latents = self.blocks.denoise(
            unet,
            self.blocks.to_model(noise),
            embeddings,
            steps=steps,
            guidance_scale=guidance_scale,
            how=how,
            stats=stats,
            progress=progress,
        )
        # 3. Decode
        images = self._decode_rows(latents)
        return [LmdResult(images[i], latents[i : i + 1], [], None, [], stats) for i in range(n)]

    # --- candidates: one layout at several seeds ----------------------------------------------

    def candidates(self, specs: Sequence[GenerationSpec], mode: RenderMode, **kwargs) -> list[LmdResult]:
        """``specs`` (one layout at several seeds: :func:`check_candidates`) rendered as one batch
        in ``mode`` (``lmd``, ``lmd+`` or ``fast``): the per-object runs of every seed share the
        per-object UNet calls (``object_batch_size`` objects a call), and the overall runs are one
        batch, one row per seed. Result ``k`` is what rendering ``specs[k]`` alone gives, up to
        float rounding (docs/method.md, "Candidates"). Keyword arguments as :meth:`controller`'s
        (``fast`` takes no ``cache``)."""
        check_candidates(specs)
        if mode is RenderMode.FAST:
            with self.blocks.autocast(self.fast_params.autocast):
                return self._fast(specs, **kwargs)
        if mode is RenderMode.LMD_PLUS:
            params = self.lmd_plus_params
        elif mode is RenderMode.LMD:
            params = self.lmd_params
        else:
            raise ValueError(f"candidates of mode {mode}: plain SD renders with plain_batch")
        with self.blocks.autocast(params.autocast):
            return self._controller(specs, mode, params, **kwargs)

    # --- fast: one guided GLIGEN pass ---------------------------------------------------------

    def fast(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """GLIGEN grounded by every box, with box-energy guidance; no per-object runs."""
        with self.blocks.autocast(self.fast_params.autocast):
            return self._fast([spec], **kwargs)[0]

    def _fast(
        self,
        specs: Sequence[GenerationSpec],
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> list[LmdResult]:
        # 0. Check inputs
        self.check_size(height, width)
        unet = self.gligen_unet
        spec, n, do_cfg = specs[0], len(specs), guidance_scale > 1
        check_object_count(len(spec.objects), RenderMode.FAST)
        params = self.fast_params
        stats = RunStats()
        progress = Progress(steps, on_step, should_cancel)
        latent_hw = self._latent_hw(height, width)
        size = {"steps": steps, "guidance_scale": guidance_scale, "height": height, "width": width}
        if not spec.objects:
            return self._background_only(
                specs, unet, params.gligen_beta, stats=stats, progress=progress, **size
            )

        # 1. Encode: token positions, targets, prompt and grounding (the same for every row)
        targets = [
            PhraseTarget(
                positions=tokens.positions,
                word_position=tokens.word_position,
                boxes=[spec.object(i).nbox for i in phrase.object_ids],
            )
            for phrase, tokens in zip(spec.phrases, self._phrase_tokens(spec), strict=True)
        ]
        embeddings = rows(self.blocks.encode_prompt(spec.prompt, spec.negative, do_cfg), n, do_cfg)
        cond = repeat_rows(self.blocks.scene_grounding(spec), n)
        noise = torch.cat([self.blocks.initial_latents(s.seed, latent_hw) for s in specs])
        latents = self.blocks.to_model(noise)

        # 2. Denoise with box guidance
        with attention_capture(unet, GUIDANCE_KEYS, latent_hw) as store:
            guidance = BackwardGuidance(
                params.guidance,
                unet=unet,
                scheduler=self.c.scheduler,
                store=store,
                cond_embeddings=embeddings[-n:],
                loss_fn=LayoutLoss([targets] * n, params.guidance.weights),
                steps=steps,
                grounding=self.blocks.guidance_grounding(cond, params.guidance_grounding),
                compile=self.blocks.compile_guidance,
            )
            how = Conditioning(
                guidance=guidance,
                grounding=with_unconditional(cond) if do_cfg else cond,
                fuser_steps=fuser_steps(params.gligen_beta, steps),
            )
            latents = self.blocks.denoise(
                unet,
                latents,
                embeddings,
                steps=steps,
                guidance_scale=guidance_scale,
                how=how,
                stats=stats,
                progress=progress,
            )

        # 3. Decode
        images, losses = self._decode_rows(latents), guidance.losses
        return [LmdResult(images[i], latents[i : i + 1], [], None, losses[i], stats) for i in range(n)]

    # --- LMD and LMD+ -------------------------------------------------------------------------

    def lmd(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """LMD on SD; keyword arguments as :meth:`controller`'s."""
        return self.controller(spec, RenderMode.LMD, self.lmd_params, **kwargs)

    def lmd_plus(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """LMD+ on GLIGEN; keyword arguments as :meth:`controller`'s."""
        return self.controller(spec, RenderMode.LMD_PLUS, self.lmd_plus_params, **kwargs)

    def controller(self, spec: GenerationSpec, mode: RenderMode, params: LmdParams, **kwargs) -> LmdResult:
        with self.blocks.autocast(params.autocast):
            return self._controller([spec], mode, params, **kwargs)[0]

    @torch.no_grad()
    def _controller(
        self,
        specs: Sequence[GenerationSpec],
        mode: RenderMode,
        params: LmdParams,
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        cache: ObjectCache | None = None,
    ) -> list[LmdResult]:
        # 0. Check inputs
        self.check_size(height, width)
        spec, n, do_cfg = specs[0], len(specs), guidance_scale > 1
        gligen = params.gligen_beta is not None
        unet = self.gligen_unet if gligen else self.c.unet
        if gligen:
            check_object_count(len(spec.objects), mode)
        stats = RunStats()
        latent_hw = self._latent_hw(height, width)
        image_hw = (height, width)

        # 1. No objects: the background and negative prompt alone
        if not spec.objects:
            return self._background_only(
                specs,
                unet,
                params.gligen_beta,
                steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                stats=stats,
                progress=Progress(steps, on_step, should_cancel),
            )

        # 2. Objects to generate, for every seed: token positions first (a prompt too long for
        #    CLIP fails before any UNet work), where each is generated, its cache key, the
        #    background noise of its seed
        phrase_tokens = self._phrase_tokens(spec)
        backgrounds = [self.blocks.initial_latents(s.seed, latent_hw) for s in specs]
        jobs: list[list[ObjectJob]] = []  # per seed, in spec order
        for candidate, background in zip(specs, backgrounds, strict=True):
            jobs.append([])
            for obj in candidate.objects:
                box = centered_nbox(obj.nbox, params.floor_padding) if params.center_objects else obj.nbox
                key = object_run_key(
                    self.c,
                    candidate,
                    obj,
                    box,
                    mode,
                    params,
                    steps=steps,
                    guidance_scale=guidance_scale,
                    image_hw=image_hw,
                )
                tokens = token_span(self.c.tokenizer, obj.prompt, obj.span)
                jobs[-1].append(ObjectJob(obj, tokens, box, key, background))
        every_job = [job for seed_jobs in jobs for job in seed_jobs]

        # 3. Per-object runs: what the cache holds is reused, the rest generated in batches
        n_object_steps = object_steps(params, steps, sam=self.c.sam is not None)
        results = cached_results(every_job, cache, n_object_steps)
        reused = set(results)
        todo = batches([job for job in every_job if job.key not in reused], self.object_batch_size)
        stats.object_cache_hits = len(reused)
        stats.object_runs = len(every_job) - len(reused)
        progress = Progress(len(todo) * n_object_steps + steps, on_step, should_cancel)
        with attention_capture(unet, RECORD_KEYS, latent_hw) as store:
            stage = ObjectStage(
                self.blocks,
                params,
                unet=unet,
                steps=steps,
                guidance_scale=guidance_scale,
                image_hw=image_hw,
                store=store,
                stats=stats,
                progress=progress,
            )
            started = time.perf_counter()
            for batch in todo:
                for job, result in zip(batch, stage.generate(batch), strict=True):
                    results[job.key] = result
                    if cache is not None:
                        cache.put(job.key, result)
            stats.object_seconds = time.perf_counter() - started

            # 4. Per seed: placement at the boxes, composition (the largest mask first)
            runs: list[list[ObjectRun]] = []
            compositions = []
            quantum = shift_quantum_px(self.c.vae_scale_factor)
            for seed_jobs, background in zip(jobs, backgrounds, strict=True):
                runs.append([])
                for job in seed_jobs:
                    result = results[job.key].to(self.c.device)
                    if params.align_objects:
                        offset = quantized_offset(result.mask.cpu(), job.spec.nbox, image_hw, quantum)
                    else:
                        offset = box_offset(result.box, job.spec.nbox, image_hw, quantum)
                    runs[-1].append(
                        place(
                            job.spec, result, offset, image_hw, cached=job.key in reused, quantum_px=quantum
                        )
                    )
                compositions.append(
                    compose(
                        self.blocks.to_model(background),
                        [run.trajectory for run in runs[-1]],
                        [run.mask for run in runs[-1]],
                        None if params.copy_vacated_noise else [run.valid for run in runs[-1]],
                    )
                )
            composition = stack_compositions(compositions)

            # 5. Encode the overall run: phrases' targets (per seed: its runs' attention is the
            #    transfer loss's reference), prompt, grounding
            targets = []
            for seed_runs in runs:
                targets.append([])
                for phrase, tokens in zip(spec.phrases, phrase_tokens, strict=True):
                    phrase_runs = [next(r for r in seed_runs if r.spec.id == i) for i in phrase.object_ids]
                    targets[-1].append(
                        PhraseTarget(
                            positions=tokens.positions,
                            word_position=tokens.word_position,
                            boxes=[r.spec.nbox for r in phrase_runs],
                            references=[r.maps for r in phrase_runs] if params.transfer_weight else [],
                        )
                    )
            embeddings = rows(self.blocks.encode_prompt(spec.prompt, spec.negative, do_cfg), n, do_cfg)
            how = Conditioning(composition=composition, frozen_steps=frozen_steps(params, steps))
            guidance_grounding = None
            if gligen:
                cond = repeat_rows(self.blocks.scene_grounding(spec), n)
                how.grounding = with_unconditional(cond) if do_cfg else cond
                how.fuser_steps = fuser_steps(params.gligen_beta, steps)
                guidance_grounding = self.blocks.guidance_grounding(cond, params.guidance_grounding)
            guidance = BackwardGuidance(
                params.overall_guidance,
                unet=unet,
                scheduler=self.c.scheduler,
                store=store,
                cond_embeddings=embeddings[-n:],
                loss_fn=LayoutLoss(
                    targets, params.overall_guidance.weights, transfer_weight=params.transfer_weight
                ),
                steps=steps,
                grounding=guidance_grounding,
                compile=self.blocks.compile_guidance,
            )
            how.guidance = guidance

            # 6. Overall denoising, every seed in one batch: guidance (energy + transfer), the
            #    frozen foreground
            latents = self.blocks.denoise(
                unet,
                composition.latents[0],
                embeddings,
                steps=steps,
                guidance_scale=guidance_scale,
                how=how,
                stats=stats,
                progress=progress,
            )

        # 7. Decode
        images, losses = self._decode_rows(latents), guidance.losses
        return [
            LmdResult(images[i], latents[i : i + 1], runs[i], compositions[i], losses[i], stats)
            for i in range(n)
        ]


def check_candidates(specs: Sequence[GenerationSpec]) -> None:
    """Candidates are one layout at several seeds: the same prompts, phrases and boxes."""
    if not specs:
        raise ValueError("no candidates to render")

    def layout_of(spec: GenerationSpec) -> tuple:
        objects = tuple((o.id, o.caption, o.nbox, o.prompt, o.negative) for o in spec.objects)
        return (spec.prompt, spec.negative, objects, spec.phrases)

    first = layout_of(specs[0])
    if any(layout_of(spec) != first for spec in specs[1:]):
        raise ValueError("candidates must share one layout; only their seeds differ")


def rows(embeddings: torch.Tensor, n: int, do_cfg: bool) -> torch.Tensor:
    """Text embeddings for ``n`` samples of one prompt: ``[negative x n, prompt x n]`` with CFG
    (the rows :meth:`Blocks.noise_prediction` expects), else ``[prompt x n]``."""
    if n == 1:
        return embeddings
    if not do_cfg:
        return embeddings.repeat(n, 1, 1)
    return torch.cat([embeddings[:1].repeat(n, 1, 1), embeddings[1:].repeat(n, 1, 1)])


def repeat_rows(grounding: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """GLIGEN inputs of one row, for ``n`` samples."""
    return {key: value.repeat(n, *([1] * (value.ndim - 1))) for key, value in grounding.items()}
