"""Loading from local directories (the same code path as hub ids), device and dtype choice."""

import logging

import numpy as np
import pytest
import torch

from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.components import select_device, select_dtype
from lmd_bot.diffusion.gligen import is_gligen_unet
from lmd_bot.diffusion.loading import load_components, load_sam
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.errors import ConfigError


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, components):
    """The tiny components saved in diffusers' and transformers' layouts."""
    sd = tmp_path_factory.mktemp("sd")
    components.unet.save_pretrained(sd / "unet")
    components.vae.save_pretrained(sd / "vae")
    components.text_encoder.save_pretrained(sd / "text_encoder")
    components.tokenizer.save_pretrained(sd / "tokenizer")
    components.scheduler.save_config(sd / "scheduler")
    sam = tmp_path_factory.mktemp("sam")
    components.sam.model.save_pretrained(sam)
    components.sam.processor.save_pretrained(sam)
    gligen = tmp_path_factory.mktemp("gligen")
    components.gligen_unet.save_pretrained(gligen / "unet")
    return sd, sam, gligen


def test_local_directories_load_and_render_like_the_originals(saved_models, components):
    sd, sam, gligen = saved_models
    loaded = load_components(
        DiffusionSettings(
            sd_model=str(sd), sam_model=str(sam), gligen_model=str(gligen), device="cpu", dtype="float32"
        )
    )
    assert loaded.sam is not None and loaded.dtype == torch.float32
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    assert is_gligen_unet(loaded.gligen_unet) and loaded.gligen_name != loaded.sd_name

    def image(c, gligen=False):
        pipe = LmdPipeline(c)
        unet = c.gligen_unet if gligen else c.unet
        img, _ = pipe.plain(
            "a cat", "", seed=2, steps=3, guidance_scale=7.5, height=128, width=128, unet=unet
        )
        return np.asarray(img)

    assert np.array_equal(image(loaded), image(components))
    assert np.array_equal(image(loaded, gligen=True), image(components, gligen=True))


def test_gligen_is_optional_but_a_bad_one_is_a_config_error(saved_models):
    sd, _, _ = saved_models
    without = load_components(
        DiffusionSettings(sd_model=str(sd), gligen_model="", device="cpu", use_sam=False)
    )
    assert without.gligen_unet is None
    with pytest.raises(ConfigError) as err:  # a plain SD UNet is not GLIGEN
        load_components(
            DiffusionSettings(sd_model=str(sd), gligen_model=str(sd), device="cpu", use_sam=False)
        )
    assert "not a GLIGEN UNet" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_components(
            DiffusionSettings(sd_model=str(sd), gligen_model=str(sd / "none"), device="cpu", use_sam=False)
        )
    assert "LMD_DIFFUSION__GLIGEN_MODEL" in str(err.value)


def test_a_missing_model_is_a_config_error_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_components(
            DiffusionSettings(
                sd_model=str(tmp_path / "nothing"), gligen_model="", device="cpu", use_sam=False
            )
        )
    assert "LMD_DIFFUSION__SD_MODEL" in str(err.value)


def test_sam_that_cannot_load_means_attention_masks(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert load_sam(str(tmp_path / "no-sam"), torch.device("cpu")) is None
    assert "attention maps" in caplog.text


def test_device_and_dtype_choice():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_dtype("auto", torch.device("cpu")) == torch.float32
    assert select_dtype("auto", torch.device("cuda")) == torch.float32  # the reference's weights
    assert select_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ConfigError):
        select_dtype("float16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as err:
            select_device("cuda")
        assert "LMD_DIFFUSION__DEVICE" in str(err.value)
