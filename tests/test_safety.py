"""The Stable Diffusion safety checker behind the policy plumbing, on tiny random weights saved to
a local folder (the real weights come from the hub; the loading code is the same)."""

from __future__ import annotations

import pytest
from PIL import Image

from lmd_bot.safety import diffusers_safety_checker


def _save_checker(folder, flag_everything: bool) -> None:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    small = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={**small, "vocab_size": 100},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        # A concept "fires" when its cosine similarity exceeds its threshold: -10 always, +10 never.
        threshold = -10.0 if flag_everything else 10.0
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(threshold)
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )


@pytest.mark.parametrize("flag_everything", [True, False])
def test_diffusers_checker_loads_from_a_folder_and_answers_per_image(tmp_path, flag_everything):
    _save_checker(tmp_path, flag_everything)
    checker = diffusers_safety_checker(str(tmp_path), device="cpu")
    assert checker.check(Image.new("RGB", (64, 64), (200, 30, 30))) is flag_everything
