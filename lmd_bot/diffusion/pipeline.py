"""LMD's stage 2 on Stable Diffusion: per-object generation, composition, overall generation.

lmd-method.md section 3; the order of operations matters and is kept:

1. each object is generated alone, in a box centred at the bottom of the canvas, from the
   background noise with 1% of its own noise blended in inside the box, with box-energy guidance;
   every latent and the word token's attention maps are kept; its mask comes from SAM (or the
   attention map);
2. each object's latents, mask and maps move by whole 64 px quanta so that the mask's centroid
   lands on its target box's centre;
3. the trajectories are composed over the background noise, the largest mask first;
4. the overall run denoises from the composed noise with energy + attention-transfer guidance for
   the first 60% of the steps, and for the first half, after every scheduler step, pins the
   objects' cells to their per-object latents of the next step (pitfall 4).

Plain SD (the ``sd`` mode, and a layout without objects) is the same loop without any of it, and
matches diffusers' ``StableDiffusionPipeline`` given the same parts and seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY, AttentionStore, attention_capture
from lmd_bot.diffusion.components import Components
from lmd_bot.diffusion.guidance import BackwardGuidance, GuidanceParams
from lmd_bot.diffusion.latents import (
    Composition,
    blend_noise,
    compose,
    draw_noise,
    quantized_offset,
    rect_mask,
    shift_quanta,
)
from lmd_bot.diffusion.losses import PhraseTarget, layout_loss
from lmd_bot.diffusion.masks import MaskParams, object_mask
from lmd_bot.diffusion.spec import GenerationSpec, ObjectSpec
from lmd_bot.diffusion.tokens import TokenSpan, token_span
from lmd_bot.errors import CancelledError, RenderError
from lmd_bot.layout.geometry import NBox, centered_nbox

log = logging.getLogger(__name__)

RECORD_KEYS = (SAM_KEY, *GUIDANCE_KEYS)


class LmdParams(BaseModel):
    """The controller's settings; defaults are the reference's ``generation/lmd.py`` (section 3.1)."""

    model_config = ConfigDict(frozen=True)

    object_guidance: GuidanceParams = GuidanceParams()
    overall_guidance: GuidanceParams = GuidanceParams()
    transfer_weight: float = Field(2.0, ge=0)  # attention transfer in the overall run; 0: off
    frozen_step_ratio: float = Field(0.5, ge=0, le=1)
    blending_ratio: float = Field(0.01, ge=0, le=1)  # the object's own noise inside its box
    center_objects: bool = True  # generate each object in a centred box (LMD); else in place
    floor_padding: float = Field(0.2, ge=0, lt=1)  # centred box's bottom edge at 1 - this
    align_objects: bool = True  # move each object back to its box by quantized shifts
    sam_start_ratio: float = Field(0.2, ge=0, lt=1)  # token map averaged from step 10 of 50 on
    masks: MaskParams = MaskParams()


StepCallback = Callable[[str, int, int, torch.Tensor], None]  # (stage, step, total, latents)
CancelCheck = Callable[[], bool]


@dataclass
class RunStats:
    unet_forwards: int = 0  # denoising forwards (a CFG pair counts once)
    guided_passes: int = 0  # guidance forward + backward passes
    sam_calls: int = 0


@dataclass
class ObjectRun:
    """One object generated alone, after alignment."""

    spec: ObjectSpec
    trajectory: torch.Tensor  # (steps + 1, 1, C, h, w)
    mask: torch.Tensor  # (h, w) bool, latent grid
    maps: dict[str, torch.Tensor]  # layer -> (steps, heads, gh, gw), the word token's attention
    valid: torch.Tensor  # (h, w) bool: where the shifted trajectory has data
    offset: tuple[int, int] = (0, 0)  # the alignment shift, in 64 px quanta (dy, dx)
    guidance_losses: list[float] = field(default_factory=list)


@dataclass
class LmdResult:
    image: Image.Image
    latents: torch.Tensor
    objects: list[ObjectRun]
    composition: Composition | None  # None without objects
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


class LmdPipeline:
    """Renders prompts (plain SD) and generation specs (LMD) with one set of components."""

    def __init__(self, components: Components, params: LmdParams | None = None) -> None:
        self.c = components
        self.params = params or LmdParams()
        from diffusers.image_processor import VaeImageProcessor

        self.image_processor = VaeImageProcessor(vae_scale_factor=components.vae_scale_factor)

    # --- building blocks ----------------------------------------------------------------------

    def check_size(self, height: int, width: int) -> None:
        if height % 64 or width % 64 or height < 64 or width < 64:
            raise RenderError(f"image size {width}x{height} must be positive multiples of 64")

    def encode_prompt(self, prompt: str, negative: str, do_cfg: bool) -> torch.Tensor:
        """Text embeddings: ``[negative, prompt]`` with CFG, else ``[prompt]`` (as diffusers does)."""
        tok = self.c.tokenizer
        texts = [negative, prompt] if do_cfg else [prompt]
        embeddings = []
        for text in texts:  # one at a time, as diffusers does: batching changes the last bits
            ids = tok(
                text,
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            embeddings.append(self.c.text_encoder(ids.input_ids.to(self.c.device))[0])
        return torch.cat(embeddings).to(self.c.dtype)

    def initial_latents(self, seed: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Unscaled background noise ``(1, C, h, w)`` on the CPU in float32."""
        return draw_noise(seed, (1, self.c.unet.config.in_channels, *latent_hw))

    def to_model(self, noise: torch.Tensor) -> torch.Tensor:
        return (noise * self.c.scheduler.init_noise_sigma).to(self.c.device, self.c.dtype)

    def noise_prediction(
        self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        do_cfg = embeddings.shape[0] == 2
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = self.c.scheduler.scale_model_input(model_input, t)
        eps = self.c.unet(model_input, t, encoder_hidden_states=embeddings).sample
        if do_cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    def decode(self, latents: torch.Tensor) -> Image.Image:
        vae = self.c.vae
        image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return self.image_processor.postprocess(image, output_type="pil")[0]

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
        on_step: StepCallback | None = None,
        should_cancel: CancelCheck | None = None,
        stats: RunStats | None = None,
        progress: _Progress | None = None,
    ) -> tuple[Image.Image, torch.Tensor]:
        """SD from ``prompt`` with ``negative``; returns ``(image, final latents)``."""
        self.check_size(height, width)
        stats = stats if stats is not None else RunStats()
        progress = progress or _Progress(steps, on_step, should_cancel)
        f = self.c.vae_scale_factor
        embeddings = self.encode_prompt(prompt, negative, guidance_scale > 1)
        self.c.scheduler.set_timesteps(steps, device=self.c.device)
        latents = self.to_model(self.initial_latents(seed, (height // f, width // f)))
        for t in self.c.scheduler.timesteps:
            progress.check()
            eps = self.noise_prediction(latents, t, embeddings, guidance_scale)
            stats.unet_forwards += 1
            latents = self.c.scheduler.step(eps, t, latents).prev_sample
            progress.step("overall", latents)
        return self.decode(latents), latents

    # --- LMD ----------------------------------------------------------------------------------

    @torch.no_grad()
    def lmd(
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
        # 0. Check inputs
        self.check_size(height, width)
        stats = RunStats()
        progress = _Progress((len(spec.objects) + 1) * steps, on_step, should_cancel)
        f = self.c.vae_scale_factor
        latent_hw = (height // f, width // f)

        # 1. No objects: plain SD on the background with the negative prompt (section 3.8)
        if not spec.objects:
            image, latents = self.plain(
                spec.prompt,
                spec.negative,
                seed=spec.seed,
                steps=steps,
                guidance_scale=guidance_scale,
                height=height,
                width=width,
                stats=stats,
                progress=progress,
            )
            return LmdResult(image, latents, [], None, [], stats)

        # Token positions first: a prompt too long for CLIP fails before any UNet work.
        phrase_tokens = [token_span(self.c.tokenizer, spec.prompt, p.span) for p in spec.phrases]
        object_tokens = [token_span(self.c.tokenizer, obj.prompt, obj.span) for obj in spec.objects]
        background = self.initial_latents(spec.seed, latent_hw)

        with attention_capture(self.c.unet, RECORD_KEYS, latent_hw) as store:
            # 2. Per-object generation
            runs = [
                self._generate_object(
                    obj, tokens, background, store, steps, guidance_scale, (height, width), stats, progress
                )
                for obj, tokens in zip(spec.objects, object_tokens, strict=True)
            ]

            # 3. Composition, the largest mask first
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
                        references=[r.maps for r in phrase_runs] if self.params.transfer_weight else [],
                    )
                )
            embeddings = self.encode_prompt(spec.prompt, spec.negative, guidance_scale > 1)
            guidance = BackwardGuidance(
                self.params.overall_guidance,
                unet=self.c.unet,
                scheduler=self.c.scheduler,
                store=store,
                cond_embeddings=embeddings[-1:],
                loss_fn=lambda maps, index: layout_loss(
                    maps,
                    targets,
                    self.params.overall_guidance.weights,
                    step_index=index,
                    transfer_weight=self.params.transfer_weight,
                ),
                steps=steps,
            )
            frozen_steps = int(self.params.frozen_step_ratio * steps)
            comp = composition.latents
            frozen = composition.frozen
            self.c.scheduler.set_timesteps(steps, device=self.c.device)
            latents = comp[0]
            for index, t in enumerate(self.c.scheduler.timesteps):
                progress.check()
                latents = guidance(latents, index, t)
                eps = self.noise_prediction(latents, t, embeddings, guidance_scale)
                stats.unet_forwards += 1
                latents = self.c.scheduler.step(eps, t, latents).prev_sample
                if index < frozen_steps:
                    latents = torch.where(frozen, comp[index + 1], latents)
                progress.step("overall", latents)
            stats.guided_passes += guidance.passes

        return LmdResult(self.decode(latents), latents, runs, composition, guidance.losses, stats)

    def _generate_object(
        self,
        obj: ObjectSpec,
        tokens: TokenSpan,
        background: torch.Tensor,
        store: AttentionStore,
        steps: int,
        guidance_scale: float,
        image_hw: tuple[int, int],
        stats: RunStats,
        progress: _Progress,
    ) -> ObjectRun:
        params = self.params
        latent_hw = background.shape[-2:]
        box: NBox = centered_nbox(obj.nbox, params.floor_padding) if params.center_objects else obj.nbox

        own = draw_noise(obj.seed, background.shape)
        latents = self.to_model(
            blend_noise(background, own, rect_mask(box, *latent_hw), params.blending_ratio)
        )
        embeddings = self.encode_prompt(obj.prompt, obj.negative, guidance_scale > 1)
        target = [PhraseTarget(positions=tokens.positions, word_position=tokens.word_position, boxes=[box])]
        guidance = BackwardGuidance(
            params.object_guidance,
            unet=self.c.unet,
            scheduler=self.c.scheduler,
            store=store,
            cond_embeddings=embeddings[-1:],
            loss_fn=lambda maps, _index: layout_loss(maps, target, params.object_guidance.weights),
            steps=steps,
        )

        self.c.scheduler.set_timesteps(steps, device=self.c.device)
        trajectory = [latents]
        recorded: dict[str, list[torch.Tensor]] = {key: [] for key in RECORD_KEYS}
        for index, t in enumerate(self.c.scheduler.timesteps):
            progress.check()
            latents = guidance(latents, index, t)
            with store.tokens(
                RECORD_KEYS, [tokens.word_position], cond_index=embeddings.shape[0] - 1
            ) as maps:
                eps = self.noise_prediction(latents, t, embeddings, guidance_scale)
            stats.unet_forwards += 1
            for key in RECORD_KEYS:
                recorded[key].append(maps[key][..., 0])
            latents = self.c.scheduler.step(eps, t, latents).prev_sample
            trajectory.append(latents)
            progress.step("objects", latents)
        stats.guided_passes += guidance.passes
        maps = {key: torch.stack(values) for key, values in recorded.items()}

        # The object's mask, from the word token's attention late in the run (and SAM).
        start = int(params.sam_start_ratio * steps)
        token_map = maps[SAM_KEY][start:].mean(dim=(0, 1))
        image = None
        if self.c.sam is not None:
            image = self.decode(latents)
            stats.sam_calls += 1
        mask = object_mask(
            token_map,
            nbox=box,
            latent_hw=latent_hw,
            image_hw=image_hw,
            params=params.masks,
            sam=self.c.sam,
            image=image,
        ).to(self.c.device)

        run = ObjectRun(
            spec=obj,
            trajectory=torch.stack(trajectory),
            mask=mask,
            maps=maps,
            valid=torch.ones_like(mask),
            guidance_losses=guidance.losses,
        )
        return self._align(run, image_hw) if params.align_objects else run

    def _align(self, run: ObjectRun, image_hw: tuple[int, int]) -> ObjectRun:
        """Move the object's latents, mask and maps so its mask is centred on its target box."""
        offset = quantized_offset(run.mask.cpu(), run.spec.nbox, image_hw)
        if offset == (0, 0):
            return run
        run.trajectory = shift_quanta(run.trajectory, offset, image_hw)
        run.mask = shift_quanta(run.mask, offset, image_hw)
        run.valid = shift_quanta(run.valid, offset, image_hw)
        run.maps = {key: shift_quanta(m, offset, image_hw) for key, m in run.maps.items()}
        run.offset = offset
        return run
