"""Shared test parts: tiny random-weight OWL-ViT / OWLv2 detectors with the real CLIP tokenizer,
built offline and saved as local folders that ``from_pretrained`` loads like hub checkpoints."""

import pytest

from lmd_bot.diffusion.tiny import clip_tokenizer


def _tiny_detector(kind, root):
    import torch
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessorPil,
        OwlViTProcessor,
    )

    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = 16  # OWL-ViT's query length
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        image_size=64,
        patch_size=16,
    )
    size = {"height": 64, "width": 64}
    torch.manual_seed(0)
    if kind == "owlvit":
        model = OwlViTForObjectDetection(
            OwlViTConfig(text_config=text, vision_config=vision, projection_dim=16)
        )
        image_processor = OwlViTImageProcessorPil(size=size, crop_size=size)
        processor = OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    else:
        model = Owlv2ForObjectDetection(
            Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)
        )
        processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size=size), tokenizer=tokenizer)
    folder = root / kind
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_detectors(tmp_path_factory):
    """Folders holding a tiny random-weight OWL-ViT and OWLv2: {"owlvit": path, "owlv2": path}."""
    root = tmp_path_factory.mktemp("detectors")
    return {kind: _tiny_detector(kind, root) for kind in ("owlvit", "owlv2")}
