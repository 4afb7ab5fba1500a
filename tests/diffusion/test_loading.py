"""Loading from local directories (the same code path as hub ids), device and dtype choice."""

import logging

import numpy as np
import pytest
import torch
from diffusers.models.attention import GatedSelfAttentionDense

from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.components import select_device, select_dtype
from lmd_bot.diffusion.gligen import is_gligen_unet
from lmd_bot.diffusion.loading import load_components, load_gligen_unet, load_sam, split_revision
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.errors import ConfigError
from lmd_bot.jobs.renderers import diffusion_renderer


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


def _gligen_copy(tmp_path, source, *, edit, weights_from=None):
    """A copy of the saved tiny GLIGEN checkpoint with its UNet config edited (and optionally
    another UNet's weights): the config styles in circulation."""
    import json
    import shutil

    target = tmp_path / "gligen-copy"
    shutil.copytree(source, target)
    if weights_from is not None:
        for weights in (weights_from / "unet").glob("*.safetensors"):
            shutil.copy(weights, target / "unet" / weights.name)
    config_path = target / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    edit(config)
    config_path.write_text(json.dumps(config))
    return target


def _fork_style(config):
    # The GLIGEN authors' diffusers fork (what the LMD reference loads) flags the gated layers so.
    del config["attention_type"]
    config["use_gated_attention"] = True


def test_a_fork_style_gligen_config_loads_with_its_fusers(saved_models, components, tmp_path):
    _, _, gligen = saved_models
    fork = _gligen_copy(tmp_path, gligen, edit=_fork_style)
    unet = load_gligen_unet(str(fork), torch.float32)
    assert is_gligen_unet(unet)
    fusers = [m for m in unet.modules() if isinstance(m, GatedSelfAttentionDense)]
    assert len(fusers) == 16  # one per transformer block, as in the original
    original = dict(components.gligen_unet.state_dict())
    assert all(torch.equal(v, original[k]) for k, v in unet.state_dict().items())


def test_a_gligen_checkpoint_that_would_load_without_fusers_is_refused(saved_models, tmp_path):
    sd, _, gligen = saved_models
    plain_config = _gligen_copy(tmp_path / "a", gligen, edit=lambda c: c.pop("attention_type"))
    with pytest.raises(ConfigError) as err:
        load_gligen_unet(str(plain_config), torch.float32)
    assert "not a GLIGEN text-box UNet" in str(err.value) and "LMD_DIFFUSION__GLIGEN_MODEL" in str(err.value)
    # A gated config over weights without the grounding layers: diffusers would only warn.
    no_weights = _gligen_copy(tmp_path / "b", gligen, edit=lambda c: None, weights_from=sd)
    with pytest.raises(ConfigError) as err:
        load_gligen_unet(str(no_weights), torch.float32)
    assert "lacks" in str(err.value) and "fuser" in str(err.value)


def test_a_hub_revision_travels_with_the_model_id(tmp_path):
    assert split_revision("masterful/gligen-1-4-generation-text-box@abc123") == (
        "masterful/gligen-1-4-generation-text-box",
        "abc123",
    )
    assert split_revision("owner/name") == ("owner/name", None)
    local = tmp_path / "dir@1"
    local.mkdir()
    assert split_revision(str(local)) == (str(local), None)  # a local path is never split
    default = DiffusionSettings().gligen_model
    assert (
        default.startswith("masterful/gligen-1-4-generation-text-box@")
        and len(split_revision(default)[1]) == 40
    )


def test_a_missing_model_is_a_config_error_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_components(
            DiffusionSettings(
                sd_model=str(tmp_path / "nothing"), gligen_model="", device="cpu", use_sam=False
            )
        )
    assert "LMD_DIFFUSION__SD_MODEL" in str(err.value)


def test_a_model_that_cannot_load_is_reported_before_the_self_check_detector_loads(tmp_path, caplog):
    """The self-check's detector is a download of its own (OWLv2): offline, its retries took minutes
    before the worker got to say that the image model itself was missing. The image model loads
    first now, so its error comes at once, and no detector is tried for a renderer that cannot run."""
    settings = DiffusionSettings(
        sd_model=str(tmp_path / "no-sd"),
        gligen_model="",
        use_sam=False,
        check_detector="owlv2",
        check_detector_model=str(tmp_path / "no-owl"),
    )
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError) as err:
        diffusion_renderer(settings.model_dump(mode="json"))  # what the GPU worker runs
    assert "LMD_DIFFUSION__SD_MODEL" in str(err.value)
    assert "self-check" not in caplog.text and "no-owl" not in caplog.text


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
