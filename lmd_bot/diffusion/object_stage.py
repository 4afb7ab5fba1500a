"""The per-object stage: every object generated alone, its trajectory, mask and attention kept.

Each object starts from the background noise with a little of its own noise blended in inside
the box it is generated in, and is denoised with its own prompt ("{background} with {caption}"):

- ``lmd``: SD, in a box centred at the bottom of the canvas, with box-energy guidance, 1% own
  noise; its mask from SAM prompted at the attention peak (or from the attention map itself);
- ``lmd+``: GLIGEN grounded by its own box and caption, in place, no guidance, 10% own noise,
  fusers on for the first 40% of the steps; its mask from SAM prompted with the box.

Speed, beyond the reference (which loops over objects): the objects that are not cached run
**batched**, one UNet call per step for a whole batch (with CFG: one call of twice that), guided
together with each object's loss on its own sample (:mod:`.guidance`); a batch may hold the
objects of several candidates, each starting from its own seed's background noise. With SAM they
run only as far as the overall run reads them (:func:`object_steps`), SAM given the clean image
predicted at the last step; their images are decoded in one VAE call and masked in one SAM call.
Attention probabilities are computed only on the layers read and only at the steps that need
them: the guidance layers during guidance passes and, for the transfer loss, at the steps the
overall run may guide; the SAM layer from 20% of the steps on when a mask comes from attention.
docs/method.md, "Per-object stage".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY, AttentionStore
from lmd_bot.diffusion.blocks import Blocks, Progress, RunStats
from lmd_bot.diffusion.cache import ObjectCache
from lmd_bot.diffusion.gligen import fuser_steps, fuser_switch, grounding_inputs, with_unconditional
from lmd_bot.diffusion.guidance import BackwardGuidance
from lmd_bot.diffusion.latents import blend_noise, draw_noise, rect_mask
from lmd_bot.diffusion.losses import LayoutLoss, PhraseTarget
from lmd_bot.diffusion.masks import attention_masks, box_prompt_masks
from lmd_bot.diffusion.objects import ObjectResult
from lmd_bot.diffusion.params import LmdParams, ObjectSchedule
from lmd_bot.diffusion.spec import ObjectSpec
from lmd_bot.diffusion.tokens import TokenSpan
from lmd_bot.layout.geometry import NBox


@dataclass(frozen=True)
class ObjectJob:
    spec: ObjectSpec
    tokens: TokenSpan
    box: NBox  # where it is generated
    key: str  # its cache key (:func:`lmd_bot.diffusion.cache.object_run_key`)
    # The scene noise ``(1, C, h, w)`` it starts from: its candidate's (a batch of candidates
    # generates the objects of every seed together).
    background: torch.Tensor


def transfer_steps(params: LmdParams, steps: int) -> int:
    """Leading steps whose per-object attention the overall run's transfer loss may read."""
    if not params.transfer_weight:
        return 0
    guided = [i for i in range(steps) if params.overall_guidance.iterations(i, steps)]
    return guided[-1] + 1 if guided else 0


def frozen_steps(params: LmdParams, steps: int) -> int:
    """Leading steps of the overall run after which the objects' cells are pinned to their runs'."""
    return int(params.frozen_step_ratio * steps)


def object_steps(params: LmdParams, steps: int, *, sam: bool) -> int:
    """Steps a per-object run takes: every one (``FULL``, the reference), or with SAM (``sam``) up
    to the last the overall run reads (``USED``): the latent after its last frozen step, the
    attention maps of its last guided step; at least one, for the mask. Without SAM the mask is
    the attention map itself, averaged up to the last step, whose later steps localise the object
    best: those runs take every step."""
    if params.object_schedule is ObjectSchedule.FULL or not sam:
        return steps
    return max(1, frozen_steps(params, steps), transfer_steps(params, steps))


def clean_prediction(scheduler, output, eps: torch.Tensor, t: torch.Tensor, latents: torch.Tensor):
    """The model's prediction of the clean latents ``x0`` at step ``t`` from the noise ``eps`` it
    predicted for ``latents``: the scheduler's own where its step returns one (DDIM, Euler, LMS),
    else from its noise schedule (epsilon prediction)."""
    x0 = getattr(output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    alpha = scheduler.alphas_cumprod[int(t)].to(latents.device, latents.dtype)
    return (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()


def cached_results(
    jobs: Sequence[ObjectJob], cache: ObjectCache | None, n_steps: int
) -> dict[str, ObjectResult]:
    """The jobs' results the cache holds, by cache key. A result of another length than a run of
    ``n_steps`` takes is not one of these runs (its key should have said so): it is not used."""
    if cache is None:
        return {}
    hits = {job.key: cache.get(job.key) for job in jobs}
    return {
        key: hit for key, hit in hits.items() if hit is not None and hit.trajectory.shape[0] == n_steps + 1
    }


def batches(jobs: Sequence[ObjectJob], size: int) -> list[list[ObjectJob]]:
    return [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]


class ObjectStage:
    """Generates batches of objects for one render (one set of params, UNet and attention store)."""

    def __init__(
        self,
        blocks: Blocks,
        params: LmdParams,
        *,
        unet,
        steps: int,
        guidance_scale: float,
        image_hw: tuple[int, int],
        store: AttentionStore,
        stats: RunStats,
        progress: Progress,
    ) -> None:
        self.blocks = blocks
        self.c = blocks.c
        self.params = params
        self.unet = unet
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.image_hw = image_hw
        self.store = store
        self.stats = stats
        self.progress = progress

    def generate(self, jobs: Sequence[ObjectJob]) -> list[ObjectResult]:
        """Generate ``jobs`` alone, together: one UNet call per step for the whole batch."""
        params, blocks, steps = self.params, self.blocks, self.steps
        n = len(jobs)
        latent_hw = jobs[0].background.shape[-2:]
        do_cfg = self.guidance_scale > 1

        # 1. Initial noise: the background's, the object's own blended in inside its box
        latents = blocks.to_model(
            torch.cat(
                [
                    blend_noise(
                        job.background,
                        draw_noise(job.spec.seed, job.background.shape),
                        rect_mask(job.box, *latent_hw),
                        params.blending_ratio,
                    )
                    for job in jobs
                ]
            )
        )

        # 2. Prompts ("{background} with {caption}") and their negatives
        encoded: dict[str, torch.Tensor] = {}
        for text in [job.spec.prompt for job in jobs] + [job.spec.negative for job in jobs]:
            if text not in encoded:
                encoded[text] = blocks.encode_text(text)
        conds = torch.cat([encoded[job.spec.prompt] for job in jobs])
        embeddings = torch.cat([*(encoded[job.spec.negative] for job in jobs), conds]) if do_cfg else conds
        cond_rows = list(range(n, 2 * n)) if do_cfg else list(range(n))

        # 3. GLIGEN grounding (lmd+): each object's own box and caption
        grounding = guidance_grounding = None
        n_fuser = 0
        if params.gligen_beta is not None:
            cond = grounding_inputs(
                [[job.box] for job in jobs],
                [blocks.phrase_features([job.spec.caption]) for job in jobs],
                device=self.c.device,
                dtype=self.c.dtype,
            )
            grounding = with_unconditional(cond) if do_cfg else cond
            guidance_grounding = blocks.guidance_grounding(cond, params.guidance_grounding)
            n_fuser = fuser_steps(params.gligen_beta, steps)

        # 4. Guidance: each object's box energy on its own sample
        targets = [
            [PhraseTarget(job.tokens.positions, job.tokens.word_position, boxes=[job.box])] for job in jobs
        ]
        guidance = BackwardGuidance(
            params.object_guidance,
            unet=self.unet,
            scheduler=self.c.scheduler,
            store=self.store,
            cond_embeddings=conds,
            loss_fn=LayoutLoss(targets, params.object_guidance.weights),
            steps=steps,
            grounding=guidance_grounding,
            compile=self.blocks.compile_guidance,
        )

        # 5. Denoising, keeping every latent and the word tokens' attention where it is read, for
        #    as many steps as the overall run reads (docs/method.md, "Per-object stage")
        n_steps = object_steps(params, steps, sam=self.c.sam is not None)
        n_transfer = transfer_steps(params, steps)
        mask_from_attention = params.sam_prompt == "point" or self.c.sam is None
        sam_start = min(int(params.sam_start_ratio * steps), n_steps - 1)
        words = [job.tokens.word_position for job in jobs]
        scheduler = self.c.scheduler
        scheduler.set_timesteps(steps, device=self.c.device)
        trajectory = [latents]
        recorded: dict[str, list[torch.Tensor]] = {key: [] for key in GUIDANCE_KEYS}
        sam_maps: list[torch.Tensor] = []
        clean = None
        with fuser_switch(self.unet) as enable_fusers:
            for index, t in enumerate(scheduler.timesteps[:n_steps]):
                self.progress.check()
                enable_fusers(index < n_fuser)
                latents = guidance(latents, index, t)
                keys = list(GUIDANCE_KEYS) if index < n_transfer else []
                if mask_from_attention and index >= sam_start:
                    keys.append(SAM_KEY)
                with self.store.tokens(keys, cond_rows, words) as maps:
                    eps = blocks.noise_prediction(
                        latents, t, embeddings, self.guidance_scale, unet=self.unet, grounding=grounding
                    )
                self.stats.unet_forwards += 1
                for key in GUIDANCE_KEYS:
                    if key in maps:
                        recorded[key].append(maps[key])
                if SAM_KEY in maps:
                    sam_maps.append(maps[SAM_KEY])
                output = scheduler.step(eps, t, latents)
                if index == n_steps - 1 and n_steps < steps:
                    # Stopped early: the mask is drawn from the clean image predicted here.
                    clean = clean_prediction(scheduler, output, eps, t, latents)
                latents = output.prev_sample
                trajectory.append(latents)
                self.progress.step("objects", latents[:1])
        self.stats.add_guidance(guidance)
        trajectories = torch.stack(trajectory)  # (n_steps + 1, n, C, h, w)

        # 6. Masks (SAM, or the attention map): every object's image in one VAE call, one SAM call
        token_maps = (
            [torch.stack([m[i] for m in sam_maps]).mean(dim=(0, 1)) for i in range(n)] if sam_maps else []
        )
        images = blocks.decode_all(latents if clean is None else clean) if self.c.sam is not None else None
        masks = self._masks([job.box for job in jobs], token_maps, images, latent_hw)
        return [
            ObjectResult(
                # A copy, so that a cached result does not keep the whole batch alive.
                trajectory=trajectories[:, i : i + 1].clone(),
                mask=masks[i].to(self.c.device),
                maps={key: torch.stack([m[i] for m in ms]) for key, ms in recorded.items() if ms},
                box=job.box,
                guidance_losses=tuple(guidance.losses[i]),
            )
            for i, job in enumerate(jobs)
        ]

    def _masks(
        self, boxes: list[NBox], token_maps: list[torch.Tensor], images, latent_hw
    ) -> list[torch.Tensor]:
        sam, masks = self.c.sam, self.params.masks
        latent_hw = tuple(latent_hw)
        if sam is not None:
            self.stats.sam_calls += len(boxes)
            if self.params.sam_prompt == "box":
                return box_prompt_masks(
                    sam, images, nboxes=boxes, latent_hw=latent_hw, image_hw=self.image_hw, params=masks
                )
        return attention_masks(
            token_maps,
            nboxes=boxes,
            latent_hw=latent_hw,
            image_hw=self.image_hw,
            params=masks,
            sam=sam,
            images=images,
        )
