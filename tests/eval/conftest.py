"""Shared test parts: a word-level CLIP tokenizer and tiny random-weight OWL-ViT / OWLv2 detectors,
built offline and saved as local folders that ``from_pretrained`` loads like hub checkpoints."""

import json

import pytest

# Every word a detector query of the benchmark can hold, so no query falls back to the unk token.
WORDS = [
    "a", "an", "photo", "of",
    "backpack", "book", "bottle", "bowl", "car", "cat", "chair", "cup", "dog", "laptop",
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
]  # fmt: skip


def write_clip_vocab(folder):
    """A CLIP BPE vocabulary whose merges rebuild each word of WORDS into one token."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in letters + [c + "</w>" for c in letters]:
        vocab[piece] = len(vocab)
    merges = []
    for word in WORDS:
        if len(word) == 1:
            continue
        left = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + "</w>" if i == len(word) - 1 else ch
            merges.append(f"{left} {right}")
            left += right
            vocab.setdefault(left, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    return folder


def _tiny_detector(kind, root):
    import torch
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessorPil,
        OwlViTProcessor,
    )

    tokenizer = CLIPTokenizer.from_pretrained(write_clip_vocab(root / "vocab"), model_max_length=16)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=1,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
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
