"""Output safety checkers: ``check(image) -> bool`` (true: the image is flagged).

Which checker runs is configuration (``guard.safety_checker``, a ``"module:function"`` factory);
it runs inside the GPU worker process after each render, and the bot applies the server's policy
to flagged images (spoiler, withhold, or off). Without a checker nothing is ever flagged.

:func:`diffusers_safety_checker` is Stable Diffusion's own checker (a CLIP model with concept
embeddings). Its weights come from the hub (``CompVis/stable-diffusion-safety-checker``) or a
local directory (``guard.safety_model``); the tests run it on tiny random weights.
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image


class SafetyChecker(Protocol):
    def check(self, image: Image.Image) -> bool: ...


class DiffusersSafetyChecker:
    def __init__(self, model: Any, processor: Any, device: str) -> None:
        self._model = model
        self._processor = processor
        self._device = device

    def check(self, image: Image.Image) -> bool:
        import numpy as np
        import torch

        inputs = self._processor(images=[image.convert("RGB")], return_tensors="pt").to(self._device)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)[None] / 255.0
        with torch.no_grad():
            _, flagged = self._model(images=pixels, clip_input=inputs.pixel_values.to(self._model.dtype))
        return bool(flagged[0])


def diffusers_safety_checker(model: str, device: str = "auto") -> DiffusersSafetyChecker:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    checker = StableDiffusionSafetyChecker.from_pretrained(model).to(device).eval()
    processor = CLIPImageProcessor.from_pretrained(model)
    return DiffusersSafetyChecker(checker, processor, device)
