"""LMD's stage 2: per-object generation, composition, overall generation; on SD (``lmd``) and on
GLIGEN (``lmd+``); plus a single guided GLIGEN pass (``fast``) and plain SD.

lmd-method.md sections 3 and 4; the order of operations matters and is kept:

1. each object is generated alone from the background noise with a little of its own noise
   blended in inside its box, keeping every latent and its word token's attention maps:
   - ``lmd``: SD, in a box centred at the bottom of the canvas, with box-energy guidance, 1% own
     noise; mask from SAM prompted at the attention peak (or the attention map itself);
   - ``lmd+``: GLIGEN grounded by its own box and caption, in place, no guidance, 10% own noise,
     fusers on for the first 40% of the steps; mask from SAM prompted with the box;
2. each object's latents, mask and maps move by whole 64 px quanta to its box (``lmd``: the
   mask's centroid to the box centre; ``lmd+``: nothing for a fresh run, which is already in
   place; a cached run generated before the box moved shifts by the box's move, quantized);
3. the trajectories are composed over the background noise, the largest mask first;
4. the overall run denoises from the composed noise with energy + attention-transfer guidance for
   the first 60% of the steps, and for the first half, after every scheduler step, pins the
   objects' cells to their per-object latents of the next step (pitfall 4). In ``lmd+`` it is a
   GLIGEN run grounding every box with its overall phrase ("two cats" for each cat), fusers on
   for the first 40% of the steps.

Speed, beyond the reference (which loops over objects): the per-object runs that are not cached
run **batched**, ``object_batch_size`` objects per UNet call (with CFG: one call of twice that),
guided together with each object's loss on its own sample (:mod:`.guidance`). Attention
probabilities are computed only on the layers read and only at the steps that need them: the
guidance layers during guidance passes and, in per-object runs, at the steps the overall run may
guide (for the transfer loss); the SAM layer from 20% of the steps on when a mask comes from
attention. Every other attention call is diffusers' SDPA, in the components' dtype.

Per-object results are cached (:mod:`.cache`) by :meth:`LmdPipeline.object_key`, so a follow-up
round recomputes only the objects that changed.

GLIGEN's guidance-pass quirk (section 4): the reference's guidance forward gets the
*unconditional* half's grounding inputs, whose masks are zero, so while the fusers are on they
see only the learned null tokens, not the boxes. ``lmd+`` keeps this (``guidance_grounding =
"null"``) because the published LMD+ numbers were measured with it; ``"boxes"`` would feed the
conditional grounding instead, ``"none"`` skips the fusers in the guidance pass as diffusers'
community pipeline does, which ``fast`` follows.

Plain SD (the ``sd`` mode, and a layout without objects in ``lmd``) is the same loop without any
of it, and matches diffusers' ``StableDiffusionPipeline`` given the same parts and seed. A layout
without objects in ``lmd+`` or ``fast`` is a GLIGEN pass with every slot empty: the fusers run on
the null grounding tokens for the first 40% of the steps, as the reference's does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY, AttentionStore, attention_capture
from lmd_bot.diffusion.cache import ObjectCache, object_key
from lmd_bot.diffusion.components import Components
from lmd_bot.diffusion.gligen import (
    check_object_count,
    fuser_steps,
    fuser_switch,
    grounding_inputs,
    null_grounding,
    with_unconditional,
)
from lmd_bot.diffusion.guidance import BackwardGuidance, GuidanceParams
from lmd_bot.diffusion.latents import (
    Composition,
    blend_noise,
    box_offset,
    compose,
    draw_noise,
    quantized_offset,
    rect_mask,
)
from lmd_bot.diffusion.losses import PhraseTarget, layout_loss
from lmd_bot.diffusion.masks import MaskParams, box_prompt_mask, object_mask
from lmd_bot.diffusion.objects import ObjectResult, ObjectRun, place
from lmd_bot.diffusion.spec import GenerationSpec, ObjectSpec
from lmd_bot.diffusion.tokens import TokenSpan, token_span
from lmd_bot.errors import CancelledError, RenderError
from lmd_bot.layout.geometry import NBox, centered_nbox

log = logging.getLogger(__name__)

RECORD_KEYS = (SAM_KEY, *GUIDANCE_KEYS)

# What the GLIGEN fusers see during a guidance pass (see the module docstring).
GuidanceGrounding = Literal["null", "boxes", "none"]


class LmdParams(BaseModel):
    """The controller's settings; defaults are the reference's ``generation/lmd.py`` (section 3.1),
    :meth:`lmd_plus` those of ``generation/lmd_plus.py`` (section 4)."""

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
    # GLIGEN scheduled sampling: fusers on for this share of the steps, in the per-object and the
    # overall runs (the reference uses 0.4 for both). None: plain SD, no grounding.
    gligen_beta: float | None = Field(None, ge=0, le=1)
    guidance_grounding: GuidanceGrounding = "null"
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
    """``fast``: diffusers' community LMD+ pipeline's guidance defaults (section 10), on the
    synthetic prompt, with LMD+'s scheduled sampling."""

    model_config = ConfigDict(frozen=True)

    guidance: GuidanceParams = GuidanceParams(
        loss_scale=20.0, max_iter=(3,) * 5 + (2,) * 5 + (1,) * 5, max_index_step=15, bg_weight=1.0
    )
    gligen_beta: float = Field(0.4, ge=0, le=1)
    guidance_grounding: GuidanceGrounding = "none"
    autocast: bool = True  # as LMD+ (see LmdParams.autocast)


StepCallback = Callable[[str, int, int, torch.Tensor], None]  # (stage, step, total, latents)
CancelCheck = Callable[[], bool]


@dataclass
class RunStats:
    unet_forwards: int = 0  # denoising UNet calls (a CFG batch of any number of objects counts once)
    guided_passes: int = 0  # guidance forward+backward UNet calls
    sam_calls: int = 0
    object_runs: int = 0  # objects denoised alone in this render
    object_cache_hits: int = 0  # objects whose run came from the cache
    object_seconds: float = 0.0  # wall time of the per-object stage
    guidance_nonfinite: int = 0  # guidance passes whose loss or gradient was NaN/inf (then stopped)


@dataclass
class LmdResult:
    image: Image.Image
    latents: torch.Tensor
    objects: list[ObjectRun]
    composition: Composition | None  # None without per-object runs
    overall_losses: list[float]
    stats: RunStats


class _Progress:
    """Step counting across stages, the cancellation check and the caller's callback."""

    def __init__(self, total: int, on_step: StepCallback | None, should_cancel: CancelCheck | None) -> None:
        self.total = total
        self.done = 0
        self.on_step = on_step
        self.should_cancel = should_cancel

    def check(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise CancelledError(f"cancelled after {self.done} of {self.total} steps")

    def step(self, stage: str, latents: torch.Tensor) -> None:
        self.done += 1
        if self.on_step is not None:
            self.on_step(stage, self.done, self.total, latents)


@dataclass(frozen=True)
class _ObjectJob:
    spec: ObjectSpec
    tokens: TokenSpan
    box: NBox  # where it is generated
    key: str


@dataclass
class _Overall:
    """How the overall run is conditioned, beyond the prompt."""

    guidance: BackwardGuidance | None = None
    grounding: dict[str, torch.Tensor] | None = None  # GLIGEN inputs for the denoising batch
    fuser_steps: int = 0
    composition: Composition | None = None
    frozen_steps: int = 0


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
    ) -> None:
        if object_batch_size < 1:
            raise ValueError("object_batch_size must be at least 1")
        self.c = components
        self.lmd_params = lmd or LmdParams()
        self.lmd_plus_params = lmd_plus or LmdParams.lmd_plus()
        self.fast_params = fast or FastParams()
        self.object_batch_size = object_batch_size
        from diffusers.image_processor import VaeImageProcessor

        self.image_processor = VaeImageProcessor(vae_scale_factor=components.vae_scale_factor)

    # --- building blocks ----------------------------------------------------------------------

    def check_size(self, height: int, width: int) -> None:
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

    def _tokenize(self, text: str):
        tok = self.c.tokenizer
        return tok(
            text, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        )

    def encode_text(self, text: str) -> torch.Tensor:
        """The text encoder's last hidden states for one text: ``(1, 77, dim)``."""
        return self.c.text_encoder(self._tokenize(text).input_ids.to(self.c.device))[0].to(self.c.dtype)

    def encode_prompt(self, prompt: str, negative: str, do_cfg: bool) -> torch.Tensor:
        """Text embeddings: ``[negative, prompt]`` with CFG, else ``[prompt]`` (as diffusers does).

        One text at a time, as diffusers does: batching changes the last bits."""
        texts = [negative, prompt] if do_cfg else [prompt]
        return torch.cat([self.encode_text(text) for text in texts])

    def phrase_features(self, phrases: Sequence[str]) -> torch.Tensor:
        """GLIGEN's phrase features: the CLIP text encoder's pooled output per phrase, ``(n, dim)``."""
        pooled: dict[str, torch.Tensor] = {}
        for phrase in phrases:
            if phrase not in pooled:
                ids = self.c.tokenizer(phrase, truncation=True, return_tensors="pt").input_ids
                pooled[phrase] = self.c.text_encoder(ids.to(self.c.device)).pooler_output
        return torch.cat([pooled[phrase] for phrase in phrases])

    def scene_grounding(self, spec: GenerationSpec) -> dict[str, torch.Tensor]:
        """One row of GLIGEN inputs: every object's box with its overall phrase ("two cats")."""
        phrase_of = {object_id: p.text for p in spec.phrases for object_id in p.object_ids}
        features = self.phrase_features([phrase_of[obj.id] for obj in spec.objects])
        return grounding_inputs(
            [[obj.nbox for obj in spec.objects]], [features], device=self.c.device, dtype=self.c.dtype
        )

    @staticmethod
    def guidance_grounding(grounding: dict[str, torch.Tensor], choice: GuidanceGrounding):
        if choice == "none":
            return None
        return null_grounding(grounding) if choice == "null" else grounding

    def initial_latents(self, seed: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Unscaled background noise ``(1, C, h, w)`` on the CPU in float32."""
        return draw_noise(seed, (1, self.c.unet.config.in_channels, *latent_hw))

    def to_model(self, noise: torch.Tensor) -> torch.Tensor:
        """Scaled initial latents on the device, in float32: latents, scheduler steps and
        guidance updates are float32 whatever the weights' dtype (docs/method.md, "Numerics")."""
        return (noise * self.c.scheduler.init_noise_sigma).to(self.c.device, torch.float32)

    def autocast(self, enabled: bool):
        """float16 autocast on CUDA when ``enabled`` (the reference's LMD+), else nothing."""
        return torch.autocast(
            self.c.device.type, dtype=torch.float16, enabled=enabled and self.c.device.type == "cuda"
        )

    def noise_prediction(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeddings: torch.Tensor,
        guidance_scale: float,
        *,
        unet=None,
        grounding: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Noise for a batch of latents; with CFG ``embeddings`` (and ``grounding``) are
        ``[unconditional rows; conditional rows]``, twice the batch."""
        unet = self.c.unet if unet is None else unet
        do_cfg = embeddings.shape[0] == 2 * latents.shape[0]
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = self.c.scheduler.scale_model_input(model_input, t).to(unet.dtype)
        kwargs = {"cross_attention_kwargs": {"gligen": grounding}} if grounding is not None else {}
        eps = unet(model_input, t, encoder_hidden_states=embeddings, **kwargs).sample.float()
        if do_cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    def decode(self, latents: torch.Tensor) -> Image.Image:
        """The image of ``(1, C, h, w)`` latents."""
        vae = self.c.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return self.image_processor.postprocess(image, output_type="pil")[0]

    def _denoise(
        self,
        unet,
        latents: torch.Tensor,
        embeddings: torch.Tensor,
        *,
        steps: int,
        guidance_scale: float,
        how: _Overall,
        stats: RunStats,
        progress: _Progress,
    ) -> torch.Tensor:
        """The overall denoising loop: guidance, the CFG step, the frozen foreground."""
        scheduler = self.c.scheduler
        scheduler.set_timesteps(steps, device=self.c.device)
        with fuser_switch(unet) as enable_fusers:
            for index, t in enumerate(scheduler.timesteps):
                progress.check()
                enable_fusers(index < how.fuser_steps)
                if how.guidance is not None:
                    latents = how.guidance(latents, index, t)
                eps = self.noise_prediction(
                    latents, t, embeddings, guidance_scale, unet=unet, grounding=how.grounding
                )
                stats.unet_forwards += 1
                latents = scheduler.step(eps, t, latents).prev_sample
                if how.composition is not None and index < how.frozen_steps:
                    comp = how.composition
                    latents = torch.where(comp.frozen, comp.latents[index + 1], latents)
                progress.step("overall", latents)
        return latents

    # --- plain Stable Diffusion ---------------------------------------------------------------

    @torch.no_grad()
    def plain(
        self,
        prompt: str,
        negative: str,
        *,
        seed: int,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        unet=None,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        stats: RunStats | None = None,
        progress: _Progress | None = None,
    ) -> tuple[Image.Image, torch.Tensor]:
        """SD from ``prompt`` with ``negative`` (on ``unet``, default SD's; a GLIGEN UNet runs
        ungrounded); returns ``(image, final latents)``."""
        self.check_size(height, width)
        stats = stats if stats is not None else RunStats()
        progress = progress or _Progress(steps, on_step, should_cancel)
        f = self.c.vae_scale_factor
        embeddings = self.encode_prompt(prompt, negative, guidance_scale > 1)
        latents = self.to_model(self.initial_latents(seed, (height // f, width // f)))
        unet = self.c.unet if unet is None else unet
        latents = self._denoise(
            unet,
            latents,
            embeddings,
            steps=steps,
            guidance_scale=guidance_scale,
            how=_Overall(),
            stats=stats,
            progress=progress,
        )
        return self.decode(latents), latents

    # --- fast: one guided GLIGEN pass ---------------------------------------------------------

    @torch.no_grad()
    def _background_only(
        self,
        spec: GenerationSpec,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        unet,
        gligen_beta: float | None,
        stats: RunStats,
        progress: _Progress,
    ) -> LmdResult:
        """A layout without objects: SD on the background and negative prompt (section 3.8).

        On GLIGEN (``gligen_beta`` set) the fusers still run for the first ``beta`` share of the
        steps, fed only null grounding tokens, as the reference's GLIGEN pass with no boxes does:
        the learned null tokens change the image, so skipping the fusers would not be the same.
        """
        f = self.c.vae_scale_factor
        embeddings = self.encode_prompt(spec.prompt, spec.negative, guidance_scale > 1)
        latents = self.to_model(self.initial_latents(spec.seed, (height // f, width // f)))
        how = _Overall()
        if gligen_beta is not None:
            rows = 2 if guidance_scale > 1 else 1
            dim = self.c.text_encoder.config.hidden_size
            how.grounding = grounding_inputs(
                [[]] * rows, [torch.zeros(0, dim)] * rows, device=self.c.device, dtype=self.c.dtype
            )
            how.fuser_steps = fuser_steps(gligen_beta, steps)
        latents = self._denoise(
            unet,
            latents,
            embeddings,
            steps=steps,
            guidance_scale=guidance_scale,
            how=how,
            stats=stats,
            progress=progress,
        )
        return LmdResult(self.decode(latents), latents, [], None, [], stats)

    def fast(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """GLIGEN grounded by every box, with box-energy guidance; no per-object runs (section 10)."""
        with self.autocast(self.fast_params.autocast):
            return self._fast(spec, **kwargs)

    def _fast(
        self,
        spec: GenerationSpec,
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> LmdResult:
        """GLIGEN grounded by every box, with box-energy guidance; no per-object runs (section 10)."""
        # 0. Check inputs
        self.check_size(height, width)
        unet = self.gligen_unet
        check_object_count(len(spec.objects), "fast")
        params = self.fast_params
        stats = RunStats()
        progress = _Progress(steps, on_step, should_cancel)
        f = self.c.vae_scale_factor
        latent_hw = (height // f, width // f)
        if not spec.objects:
            return self._background_only(
                spec, steps, guidance_scale, height, width, unet, params.gligen_beta, stats, progress
            )

        # 1. Token positions, targets, prompt and grounding
        targets = [
            PhraseTarget(
                positions=tokens.positions,
                word_position=tokens.word_position,
                boxes=[spec.object(i).nbox for i in phrase.object_ids],
            )
            for phrase, tokens in zip(spec.phrases, self._phrase_tokens(spec), strict=True)
        ]
        embeddings = self.encode_prompt(spec.prompt, spec.negative, guidance_scale > 1)
        cond = self.scene_grounding(spec)
        latents = self.to_model(self.initial_latents(spec.seed, latent_hw))

        # 2. Denoising with box guidance
        with attention_capture(unet, GUIDANCE_KEYS, latent_hw) as store:
            guidance = BackwardGuidance(
                params.guidance,
                unet=unet,
                scheduler=self.c.scheduler,
                store=store,
                cond_embeddings=embeddings[-1:],
                loss_fn=lambda maps, _index, _row: layout_loss(maps, targets, params.guidance.weights),
                steps=steps,
                grounding=self.guidance_grounding(cond, params.guidance_grounding),
            )
            how = _Overall(
                guidance=guidance,
                grounding=with_unconditional(cond) if guidance_scale > 1 else cond,
                fuser_steps=fuser_steps(params.gligen_beta, steps),
            )
            latents = self._denoise(
                unet,
                latents,
                embeddings,
                steps=steps,
                guidance_scale=guidance_scale,
                how=how,
                stats=stats,
                progress=progress,
            )
            stats.guided_passes += guidance.passes
            stats.guidance_nonfinite += len(guidance.nonfinite)
        return LmdResult(self.decode(latents), latents, [], None, guidance.losses[0], stats)

    # --- LMD and LMD+ -------------------------------------------------------------------------

    def lmd(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """LMD on SD (section 3); keyword arguments as :meth:`controller`'s."""
        return self.controller(spec, "lmd", self.lmd_params, **kwargs)

    def lmd_plus(self, spec: GenerationSpec, **kwargs) -> LmdResult:
        """LMD+ on GLIGEN (section 4); keyword arguments as :meth:`controller`'s."""
        return self.controller(spec, "lmd+", self.lmd_plus_params, **kwargs)

    def _phrase_tokens(self, spec: GenerationSpec) -> list[TokenSpan]:
        return [token_span(self.c.tokenizer, spec.prompt, p.span) for p in spec.phrases]

    def controller(self, spec: GenerationSpec, mode: str, params: LmdParams, **kwargs) -> LmdResult:
        with self.autocast(params.autocast):
            return self._controller(spec, mode, params, **kwargs)

    @torch.no_grad()
    def _controller(
        self,
        spec: GenerationSpec,
        mode: str,
        params: LmdParams,
        *,
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        cache: ObjectCache | None = None,
    ) -> LmdResult:
        # 0. Check inputs
        self.check_size(height, width)
        gligen = params.gligen_beta is not None
        unet = self.gligen_unet if gligen else self.c.unet
        if gligen:
            check_object_count(len(spec.objects), mode)
        stats = RunStats()
        f = self.c.vae_scale_factor
        latent_hw = (height // f, width // f)
        image_hw = (height, width)

        # 1. No objects: plain SD on the background with the negative prompt (section 3.8)
        if not spec.objects:
            progress = _Progress(steps, on_step, should_cancel)
            return self._background_only(
                spec, steps, guidance_scale, height, width, unet, params.gligen_beta, stats, progress
            )

        # Token positions first: a prompt too long for CLIP fails before any UNet work.
        phrase_tokens = self._phrase_tokens(spec)
        jobs = []
        for obj in spec.objects:
            box = centered_nbox(obj.nbox, params.floor_padding) if params.center_objects else obj.nbox
            key = self.object_key(
                spec, obj, box, mode, params, steps=steps, guidance_scale=guidance_scale, image_hw=image_hw
            )
            jobs.append(_ObjectJob(obj, token_span(self.c.tokenizer, obj.prompt, obj.span), box, key))
        background = self.initial_latents(spec.seed, latent_hw)

        # 2. Per-object runs: what the cache holds is reused, the rest generated in batches
        results: dict[int, ObjectResult] = {}
        if cache is not None:
            for job in jobs:
                hit = cache.get(job.key)
                if hit is not None:
                    results[job.spec.id] = hit
        missing = [job for job in jobs if job.spec.id not in results]
        reused = set(results)
        stats.object_cache_hits = len(jobs) - len(missing)
        stats.object_runs = len(missing)
        size = self.object_batch_size
        batches = [missing[i : i + size] for i in range(0, len(missing), size)]
        progress = _Progress((len(batches) + 1) * steps, on_step, should_cancel)

        with attention_capture(unet, RECORD_KEYS, latent_hw) as store:
            started = time.perf_counter()
            for batch in batches:
                generated = self._generate_objects(
                    batch,
                    params,
                    unet=unet,
                    steps=steps,
                    guidance_scale=guidance_scale,
                    image_hw=image_hw,
                    background=background,
                    store=store,
                    stats=stats,
                    progress=progress,
                )
                for job, result in zip(batch, generated, strict=True):
                    results[job.spec.id] = result
                    if cache is not None:
                        cache.put(job.key, result)
            stats.object_seconds = time.perf_counter() - started

            # 3. Placement at the boxes, composition (the largest mask first)
            runs = []
            for job in jobs:
                result = results[job.spec.id].to(self.c.device)
                if params.align_objects:
                    offset = quantized_offset(result.mask.cpu(), job.spec.nbox, image_hw)
                else:
                    offset = box_offset(result.box, job.spec.nbox, image_hw)
                runs.append(place(job.spec, result, offset, image_hw, cached=job.spec.id in reused))
            composition = compose(
                self.to_model(background),
                [run.trajectory for run in runs],
                [run.mask for run in runs],
                [run.valid for run in runs],
            )

            # 4. Overall generation: guidance (energy + transfer), frozen foreground
            targets = []
            for phrase, tokens in zip(spec.phrases, phrase_tokens, strict=True):
                phrase_runs = [next(r for r in runs if r.spec.id == i) for i in phrase.object_ids]
                targets.append(
                    PhraseTarget(
                        positions=tokens.positions,
                        word_position=tokens.word_position,
                        boxes=[r.spec.nbox for r in phrase_runs],
                        references=[r.maps for r in phrase_runs] if params.transfer_weight else [],
                    )
                )
            embeddings = self.encode_prompt(spec.prompt, spec.negative, guidance_scale > 1)
            how = _Overall(composition=composition, frozen_steps=int(params.frozen_step_ratio * steps))
            guidance_grounding = None
            if gligen:
                cond = self.scene_grounding(spec)
                how.grounding = with_unconditional(cond) if guidance_scale > 1 else cond
                how.fuser_steps = fuser_steps(params.gligen_beta, steps)
                guidance_grounding = self.guidance_grounding(cond, params.guidance_grounding)
            how.guidance = BackwardGuidance(
                params.overall_guidance,
                unet=unet,
                scheduler=self.c.scheduler,
                store=store,
                cond_embeddings=embeddings[-1:],
                loss_fn=lambda maps, index, _row: layout_loss(
                    maps,
                    targets,
                    params.overall_guidance.weights,
                    step_index=index,
                    transfer_weight=params.transfer_weight,
                ),
                steps=steps,
                grounding=guidance_grounding,
            )
            latents = self._denoise(
                unet,
                composition.latents[0],
                embeddings,
                steps=steps,
                guidance_scale=guidance_scale,
                how=how,
                stats=stats,
                progress=progress,
            )
            stats.guided_passes += how.guidance.passes
            stats.guidance_nonfinite += len(how.guidance.nonfinite)

        return LmdResult(self.decode(latents), latents, runs, composition, how.guidance.losses[0], stats)

    def object_key(
        self,
        spec: GenerationSpec,
        obj: ObjectSpec,
        box: NBox,
        mode: str,
        params: LmdParams,
        *,
        steps: int,
        guidance_scale: float,
        image_hw: tuple[int, int],
    ) -> str:
        """The cache key of an object's run: everything that determines it, and nothing else.

        The model, device and dtype; the mode and every controller setting (guidance settings
        included: they also decide which attention steps are kept); the scheduler and its config,
        the step count, the CFG scale and the image size; the object's prompt ("{background} with
        {caption}") and negative prompt, its box **size** and its seeds (the scene seed draws the
        background noise it starts from). Not the box position: LMD generates every object in a
        centred box anyway; LMD+ generates it in place, and a run generated before a move is
        reused, shifted by the move in whole 64 px quanta (lands within 32 px at 512 px).
        The batch size does not enter: a run's result does not depend on its batch companions
        (beyond float rounding).
        """
        scheduler = self.c.scheduler
        x0, y0, x1, y1 = box
        parts = {
            "version": 1,
            "model": self.c.gligen_name if params.gligen_beta is not None else self.c.sd_name,
            "device": self.c.device.type,
            "dtype": str(self.c.dtype),
            "mode": mode,
            "params": params.model_dump(mode="json"),
            "scheduler": [type(scheduler).__name__, dict(scheduler.config)],
            "steps": steps,
            "guidance_scale": guidance_scale,
            "image": list(image_hw),
            "prompt": obj.prompt,
            "span": [obj.span.start, obj.span.end],
            "negative": obj.negative,
            "box_size": [round(x1 - x0, 9), round(y1 - y0, 9)],
            "seed": obj.seed,
            "scene_seed": spec.seed,
            "sam": self.c.sam.name if self.c.sam is not None else None,
        }
        return object_key(parts)

    @staticmethod
    def transfer_steps(params: LmdParams, steps: int) -> int:
        """Leading steps whose per-object attention the overall run's transfer loss may read."""
        if not params.transfer_weight:
            return 0
        guided = [i for i in range(steps) if params.overall_guidance.iterations(i, steps)]
        return guided[-1] + 1 if guided else 0

    def _generate_objects(
        self,
        jobs: Sequence[_ObjectJob],
        params: LmdParams,
        *,
        unet,
        steps: int,
        guidance_scale: float,
        image_hw: tuple[int, int],
        background: torch.Tensor,
        store: AttentionStore,
        stats: RunStats,
        progress: _Progress,
    ) -> list[ObjectResult]:
        """Generate ``jobs`` alone, together: one UNet call per step for the whole batch."""
        n = len(jobs)
        latent_hw = background.shape[-2:]
        do_cfg = guidance_scale > 1
        latents = self.to_model(
            torch.cat(
                [
                    blend_noise(
                        background,
                        draw_noise(job.spec.seed, background.shape),
                        rect_mask(job.box, *latent_hw),
                        params.blending_ratio,
                    )
                    for job in jobs
                ]
            )
        )
        encoded: dict[str, torch.Tensor] = {}
        for text in [job.spec.prompt for job in jobs] + [job.spec.negative for job in jobs]:
            if text not in encoded:
                encoded[text] = self.encode_text(text)
        conds = torch.cat([encoded[job.spec.prompt] for job in jobs])
        embeddings = torch.cat([*(encoded[job.spec.negative] for job in jobs), conds]) if do_cfg else conds
        cond_rows = list(range(n, 2 * n)) if do_cfg else list(range(n))

        grounding = guidance_grounding = None
        n_fuser = 0
        if params.gligen_beta is not None:
            cond = grounding_inputs(
                [[job.box] for job in jobs],
                [self.phrase_features([job.spec.caption]) for job in jobs],
                device=self.c.device,
                dtype=self.c.dtype,
            )
            grounding = with_unconditional(cond) if do_cfg else cond
            guidance_grounding = self.guidance_grounding(cond, params.guidance_grounding)
            n_fuser = fuser_steps(params.gligen_beta, steps)
        targets = [
            [PhraseTarget(job.tokens.positions, job.tokens.word_position, boxes=[job.box])] for job in jobs
        ]
        guidance = BackwardGuidance(
            params.object_guidance,
            unet=unet,
            scheduler=self.c.scheduler,
            store=store,
            cond_embeddings=conds,
            loss_fn=lambda maps, _index, row: layout_loss(maps, targets[row], params.object_guidance.weights),
            steps=steps,
            grounding=guidance_grounding,
        )
        n_transfer = self.transfer_steps(params, steps)
        mask_from_attention = params.sam_prompt == "point" or self.c.sam is None
        sam_start = int(params.sam_start_ratio * steps)
        words = [job.tokens.word_position for job in jobs]

        scheduler = self.c.scheduler
        scheduler.set_timesteps(steps, device=self.c.device)
        trajectory = [latents]
        recorded: dict[str, list[torch.Tensor]] = {key: [] for key in GUIDANCE_KEYS}
        sam_maps: list[torch.Tensor] = []
        with fuser_switch(unet) as enable_fusers:
            for index, t in enumerate(scheduler.timesteps):
                progress.check()
                enable_fusers(index < n_fuser)
                latents = guidance(latents, index, t)
                keys = list(GUIDANCE_KEYS) if index < n_transfer else []
                if mask_from_attention and index >= sam_start:
                    keys.append(SAM_KEY)
                with store.tokens(keys, cond_rows, words) as maps:
                    eps = self.noise_prediction(
                        latents, t, embeddings, guidance_scale, unet=unet, grounding=grounding
                    )
                stats.unet_forwards += 1
                for key in GUIDANCE_KEYS:
                    if key in maps:
                        recorded[key].append(maps[key])
                if SAM_KEY in maps:
                    sam_maps.append(maps[SAM_KEY])
                latents = scheduler.step(eps, t, latents).prev_sample
                trajectory.append(latents)
                progress.step("objects", latents[:1])
        stats.guided_passes += guidance.passes
        stats.guidance_nonfinite += len(guidance.nonfinite)
        trajectories = torch.stack(trajectory)  # (steps + 1, n, C, h, w)

        results = []
        for i, job in enumerate(jobs):
            token_map = torch.stack([m[i] for m in sam_maps]).mean(dim=(0, 1)) if sam_maps else None
            image = self.decode(latents[i : i + 1]) if self.c.sam is not None else None
            mask = self._object_mask(params, job.box, token_map, image, latent_hw, image_hw, stats)
            results.append(
                ObjectResult(
                    # A copy, so that a cached result does not keep the whole batch alive.
                    trajectory=trajectories[:, i : i + 1].clone(),
                    mask=mask.to(self.c.device),
                    maps={key: torch.stack([m[i] for m in ms]) for key, ms in recorded.items() if ms},
                    box=job.box,
                    guidance_losses=tuple(guidance.losses[i]),
                )
            )
        return results

    def _object_mask(
        self,
        params: LmdParams,
        box: NBox,
        token_map: torch.Tensor | None,
        image: Image.Image | None,
        latent_hw: tuple[int, int],
        image_hw: tuple[int, int],
        stats: RunStats,
    ) -> torch.Tensor:
        sam = self.c.sam
        if sam is not None:
            stats.sam_calls += 1
            if params.sam_prompt == "box":
                return box_prompt_mask(
                    sam, image, nbox=box, latent_hw=latent_hw, image_hw=image_hw, params=params.masks
                )
        return object_mask(
            token_map,
            nbox=box,
            latent_hw=latent_hw,
            image_hw=image_hw,
            params=params.masks,
            sam=sam,
            image=image,
        )
