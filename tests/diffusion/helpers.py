"""Helpers shared by the diffusion tests."""

import torch
from diffusers import StableDiffusionPipeline


def diffusers_sd(components, prompt, negative, seed, steps, size, *, unet=None, scheduler=None):
    """diffusers' own ``StableDiffusionPipeline`` on the same parts (optionally another UNet)."""
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet if unet is None else unet,
        scheduler=components.scheduler if scheduler is None else scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=7.5,
        height=size,
        width=size,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]
