"""The blocks every mode is built from: encode (prompts, phrases, grounding), denoise (the noise
prediction with CFG and the denoising loop with its optional guidance, GLIGEN grounding and frozen
foreground) and decode; plus the run's statistics and progress.

Numerics (docs/method.md, "Numerics"): latents live in float32 whatever the weights' dtype; the
UNet gets them cast to its own dtype and its noise comes back as float32, so every scheduler step
is float32. With float32 weights (the default) this is the reference's LMD; :meth:`Blocks.autocast`
adds its LMD+'s float16 autocast on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from lmd_bot.diffusion.components import Components
from lmd_bot.diffusion.gligen import fuser_switch, grounding_inputs, null_grounding
from lmd_bot.diffusion.guidance import BackwardGuidance
from lmd_bot.diffusion.latents import Composition, draw_noise
from lmd_bot.diffusion.params import GuidanceGrounding
from lmd_bot.diffusion.spec import GenerationSpec
from lmd_bot.errors import CancelledError

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

    def add_guidance(self, guidance: BackwardGuidance) -> None:
        self.guided_passes += guidance.passes
        self.guidance_nonfinite += len(guidance.nonfinite)


class Progress:
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


@dataclass
class Conditioning:
    """How a denoising loop is conditioned beyond the prompt; the empty default is plain SD."""

    guidance: BackwardGuidance | None = None
    grounding: dict[str, torch.Tensor] | None = None  # GLIGEN inputs for the denoising batch
    fuser_steps: int = 0
    composition: Composition | None = None
    frozen_steps: int = 0


class Blocks:
    """Encode, denoise and decode with one set of components."""

    def __init__(self, components: Components, *, compile_guidance: bool = False) -> None:
        from diffusers.image_processor import VaeImageProcessor

        self.c = components
        self.compile_guidance = compile_guidance  # torch.compile the guidance loss (see .guidance)
        self.image_processor = VaeImageProcessor(vae_scale_factor=components.vae_scale_factor)

    # --- encode -------------------------------------------------------------------------------

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

    def empty_grounding(self, rows: int) -> dict[str, torch.Tensor]:
        """``rows`` rows of GLIGEN inputs with every slot empty: only the null grounding tokens."""
        dim = self.c.text_encoder.config.hidden_size
        return grounding_inputs(
            [[]] * rows, [torch.zeros(0, dim)] * rows, device=self.c.device, dtype=self.c.dtype
        )

    @staticmethod
    def guidance_grounding(grounding: dict[str, torch.Tensor], choice: GuidanceGrounding):
        if choice == "none":
            return None
        return null_grounding(grounding) if choice == "null" else grounding

    # --- noise --------------------------------------------------------------------------------

    def initial_latents(
        self, seed: int, latent_hw: tuple[int, int], *, on_device: bool = False
    ) -> torch.Tensor:
        """Unscaled noise ``(1, C, h, w)`` in float32: drawn on the CPU (the same on every device),
        or with a generator on the device (``on_device``, as diffusers' and the reference's SD
        baseline draw it)."""
        shape = (1, self.c.unet.config.in_channels, *latent_hw)
        if not on_device:
            return draw_noise(seed, shape)
        generator = torch.Generator(self.c.device).manual_seed(seed)
        return torch.randn(shape, generator=generator, device=self.c.device, dtype=torch.float32)

    def to_model(self, noise: torch.Tensor, scheduler=None) -> torch.Tensor:
        """Scaled initial latents on the device, in float32."""
        scheduler = self.c.scheduler if scheduler is None else scheduler
        return (noise * scheduler.init_noise_sigma).to(self.c.device, torch.float32)

    def autocast(self, enabled: bool):
        """float16 autocast on CUDA when ``enabled`` (the reference's LMD+), else nothing."""
        on = enabled and self.c.device.type == "cuda"
        return torch.autocast(self.c.device.type, dtype=torch.float16, enabled=on)

    # --- denoise ------------------------------------------------------------------------------

    def noise_prediction(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        embeddings: torch.Tensor,
        guidance_scale: float,
        *,
        unet,
        grounding: dict[str, torch.Tensor] | None = None,
        scheduler=None,
    ) -> torch.Tensor:
        """Noise (float32) for a batch of latents; with CFG ``embeddings`` (and ``grounding``) are
        ``[unconditional rows; conditional rows]``, twice the batch."""
        scheduler = self.c.scheduler if scheduler is None else scheduler
        do_cfg = embeddings.shape[0] == 2 * latents.shape[0]
        model_input = torch.cat([latents] * 2) if do_cfg else latents
        model_input = scheduler.scale_model_input(model_input, t).to(unet.dtype)
        kwargs = {"cross_attention_kwargs": {"gligen": grounding}} if grounding is not None else {}
        eps = unet(model_input, t, encoder_hidden_states=embeddings, **kwargs).sample.float()
        if do_cfg:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
        return eps

    def denoise(
        self,
        unet,
        latents: torch.Tensor,
        embeddings: torch.Tensor,
        *,
        steps: int,
        guidance_scale: float,
        how: Conditioning,
        stats: RunStats,
        progress: Progress,
        scheduler=None,
    ) -> torch.Tensor:
        """A whole denoising loop: per step, guidance, the CFG noise prediction (fusers on for the
        first ``how.fuser_steps``), the scheduler step, then the frozen foreground: the objects'
        cells are pinned to their latents of the *next* step (docs/method.md, "Overall
        generation")."""
        scheduler = self.c.scheduler if scheduler is None else scheduler
        scheduler.set_timesteps(steps, device=self.c.device)
        with fuser_switch(unet) as enable_fusers:
            for index, t in enumerate(scheduler.timesteps):
                progress.check()
                enable_fusers(index < how.fuser_steps)
                if how.guidance is not None:
                    latents = how.guidance(latents, index, t)
                eps = self.noise_prediction(
                    latents,
                    t,
                    embeddings,
                    guidance_scale,
                    unet=unet,
                    grounding=how.grounding,
                    scheduler=scheduler,
                )
                stats.unet_forwards += 1
                latents = scheduler.step(eps, t, latents).prev_sample
                if how.composition is not None and index < how.frozen_steps:
                    comp = how.composition
                    latents = torch.where(comp.frozen, comp.latents[index + 1], latents)
                progress.step("overall", latents)
        if how.guidance is not None:
            stats.add_guidance(how.guidance)
        return latents

    # --- decode -------------------------------------------------------------------------------

    def decode(self, latents: torch.Tensor) -> Image.Image:
        """The image of ``(1, C, h, w)`` latents."""
        return self.decode_all(latents)[0]

    def decode_all(self, latents: torch.Tensor) -> list[Image.Image]:
        """The images of ``(n, C, h, w)`` latents, in one VAE call."""
        vae = self.c.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return self.image_processor.postprocess(images, output_type="pil")
