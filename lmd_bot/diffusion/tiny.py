"""Random-weight models built offline: tiny ones for tests and the CPU benchmark, and the full SD
v1.5 / SAM ViT-B architectures for measuring real-size cost on a GPU (no weights needed: a random
model costs exactly what the trained one does).

The tiny UNet has SD v1.x's block structure, so it has the same 16 cross-attention layers, with
the same diffusers names and 8 heads, as SD v1.5 (environment.md): LMD's layers exist in it. Every
builder is deterministic: weights come from a fixed seed, without touching the global RNG.

The tokenizer is the real CLIP BPE tokenizer, built from the vocabulary shipped in
``lmd_bot/assets/clip`` (MIT, OpenAI; see the README there), so token positions in tests are
those of SD v1.5.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

import torch

from lmd_bot.diffusion.components import Components
from lmd_bot.diffusion.masks import SamParts

CLIP_VOCAB = Path(__file__).resolve().parent.parent / "assets" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
# The vocabulary file's merges are lines 1..48894 (line 0 is a version header): 49408 tokens in
# all with 256 byte symbols, their end-of-word forms and the two special tokens.
_N_MERGES = 49152 - 256 - 2

TINY_TEXT_DIM = 32


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values, in vocabulary order.

    Printable bytes stand for themselves and come first; the others follow, mapped to 256, 257...
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


@cache
def _clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    with gzip.open(CLIP_VOCAB, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")[1 : _N_MERGES + 1]
    merges = tuple(tuple(line.split()) for line in lines)
    symbols = _bytes_to_unicode()
    tokens = [
        *symbols,
        *(s + "</w>" for s in symbols),
        *("".join(m) for m in merges),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer():
    """SD v1.5's CLIP tokenizer (same ids), built offline from the shipped vocabulary."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        model_max_length=77,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _sd_unet_kwargs() -> dict:
    return {
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "layers_per_block": 2,
        "attention_head_dim": 8,  # diffusers reads this as the head count for SD v1: 8 heads
    }


def tiny_unet(seed: int = 0, *, gated: bool = False):
    """SD v1.x block structure at 2.4 M parameters.

    ``gated`` makes it a GLIGEN UNet: a position net and a gated fuser in every transformer block.
    GLIGEN initializes the fusers' gates to zero (tanh(0) = 0: no effect until trained); here they
    are opened (gate 1.0), so that boxes and phrases change the output as a trained model's do.
    """
    from diffusers import UNet2DConditionModel

    kwargs = {"attention_type": "gated"} if gated else {}
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=32,
            block_out_channels=(32, 32, 64, 64),
            cross_attention_dim=TINY_TEXT_DIM,
            norm_num_groups=32,
            **_sd_unet_kwargs(),
            **kwargs,
        ),
    )
    if gated:
        with torch.no_grad():
            for name, param in unet.named_parameters():
                if name.endswith((".fuser.alpha_attn", ".fuser.alpha_dense")):
                    param.fill_(1.0)
    return unet


def tiny_gligen_unet(seed: int = 0):
    """The tiny UNet with GLIGEN's grounding adapters (``attention_type="gated"``), for LMD+."""
    return tiny_unet(seed, gated=True)


def tiny_vae(seed: int = 0):
    """Four blocks, so the scale factor is 8 as in SD; very few channels."""
    from diffusers import AutoencoderKL

    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=256,
        ),
    )


def tiny_text_config():
    """A 5-layer CLIP text config over the real CLIP vocabulary (ids as the offline tokenizer's)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=TINY_TEXT_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
        projection_dim=TINY_TEXT_DIM,
    )


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextModel

    return _seeded(seed, lambda: CLIPTextModel(tiny_text_config()))


def ddim_scheduler():
    """SD v1.5's DDIM settings (its checkpoint's scheduler config read as DDIM)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sam_processor(image_size: int):
    from transformers import SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    return SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size}
        )
    )


def tiny_sam(seed: int = 0) -> SamParts:
    """A SAM with a 64 px image encoder; its processor resizes images to 64 px."""
    from transformers import SamConfig, SamModel

    size = 64
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": size,
            "patch_size": 8,
            "window_size": 4,
            "global_attn_indexes": (1,),
            "num_pos_feats": 8,
            "mlp_dim": 64,
        },
        prompt_encoder_config={
            "hidden_size": 16,
            "image_size": size,
            "patch_size": 8,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 16,
            "mlp_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
    )
    return SamParts(
        model=_seeded(seed, lambda: SamModel(config)), processor=_sam_processor(size), name=f"tiny-sam:{seed}"
    )


def tiny_components(seed: int = 0, *, sam: bool = True, gligen: bool = True) -> Components:
    """Everything a render needs, tiny and random, on the CPU in float32."""
    return Components(
        unet=tiny_unet(seed),
        vae=tiny_vae(seed + 1),
        text_encoder=tiny_text_encoder(seed + 2),
        tokenizer=clip_tokenizer(),
        scheduler=ddim_scheduler(),
        sam=tiny_sam(seed + 3) if sam else None,
        gligen_unet=tiny_gligen_unet(seed + 4) if gligen else None,
        sd_name=f"tiny-sd:{seed}",
        gligen_name=f"tiny-gligen:{seed + 4}",
    )


def full_size_components(
    device: torch.device, dtype: torch.dtype, seed: int = 0, *, sam: bool = True, gligen: bool = True
) -> Components:
    """SD v1.5's UNet, VAE and CLIP ViT-L/14 text encoder, GLIGEN's gated UNet and SAM ViT-B,
    random, on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, SamConfig, SamModel

    def build(factory):
        # Initializing ~1.1 B parameters on the target device is much faster than on the CPU.
        with torch.device(device):
            return _seeded(seed, factory).to(dtype)

    text_config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        projection_dim=768,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    sd_unet = {
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "cross_attention_dim": 768,
        **_sd_unet_kwargs(),
    }
    sd_vae = {
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "sample_size": 512,
    }
    return Components(
        unet=build(lambda: UNet2DConditionModel(**sd_unet)),
        gligen_unet=(
            build(lambda: UNet2DConditionModel(**sd_unet, attention_type="gated")) if gligen else None
        ),
        vae=build(lambda: AutoencoderKL(**sd_vae)),
        text_encoder=build(lambda: CLIPTextModel(text_config)),
        tokenizer=clip_tokenizer(),
        scheduler=ddim_scheduler(),
        sam=SamParts(
            # float16 on CUDA, as load_sam loads it
            model=build(lambda: SamModel(SamConfig())).to(torch.float16 if device.type == "cuda" else dtype),
            processor=_sam_processor(1024),
            name="sam-vit-b",
        )
        if sam
        else None,
        device=device,
        dtype=dtype,
    )


def tiny_refiner_pipeline(seed: int = 0):
    """An SDXL-refiner-shaped img2img pipeline, tiny and random: a UNet with SDXL's ``text_time``
    conditioning (the refiner's aesthetic score included) and only the second text encoder, with
    projection, as the refiner checkpoint has."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModelWithProjection

    time_dim = (
        8  # five time ids (original size, crop, aesthetic score) of 8 features, plus the text embedding
    )
    unet = _seeded(
        seed,
        lambda: UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=5 * time_dim + TINY_TEXT_DIM,
            cross_attention_dim=TINY_TEXT_DIM,
            norm_num_groups=32,
        ),
    )
    text_encoder = _seeded(
        seed + 1,
        lambda: CLIPTextModelWithProjection(tiny_text_config()),
    )
    return StableDiffusionXLImg2ImgPipeline(
        vae=tiny_vae(seed + 2),
        text_encoder=None,
        text_encoder_2=text_encoder,
        tokenizer=None,
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
