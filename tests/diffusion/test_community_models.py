"""Community models: a single-file SD checkpoint and LoRAs, loaded offline with diffusers' loaders."""

import numpy as np
import pytest
import torch

from lmd_bot.config import DiffusionSettings, LoraSettings, load_settings
from lmd_bot.diffusion.loading import load_components
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.errors import ConfigError
from tests.diffusion.checkpoints import write_config_folder, write_lora, write_single_file


@pytest.fixture(scope="module")
def files(tmp_path_factory, components):
    """The tiny SD model as a folder, as one original-layout file with its config folder, and a LoRA."""
    root = tmp_path_factory.mktemp("community")
    folder = root / "folder"
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    components.scheduler.save_config(folder / "scheduler")
    return {
        "folder": folder,
        "file": write_single_file(components, root / "tiny-finetune.safetensors"),
        "config": write_config_folder(components, root / "config"),
        "lora": write_lora(components.unet, root / "lora"),
    }


def _load(**settings):
    return load_components(DiffusionSettings(gligen_model="", use_sam=False, device="cpu", **settings))


def _image(components) -> np.ndarray:
    image, _ = LmdPipeline(components).plain(
        "a red apple", "", seed=3, steps=3, guidance_scale=7.5, height=64, width=64
    )
    return np.asarray(image)


def test_a_single_file_checkpoint_loads_offline_and_renders_like_the_folder(files):
    folder = _load(sd_model=str(files["folder"]))
    single = _load(sd_model=str(files["file"]), sd_config=str(files["config"]))
    assert type(single.scheduler).__name__ == "DDIMScheduler"
    assert single.tokenizer.model_max_length == 77
    for part in ("unet", "vae", "text_encoder"):
        expected = getattr(folder, part).state_dict()
        got = getattr(single, part).state_dict()
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in expected), part
    assert np.array_equal(_image(single), _image(folder))
    assert single.sd_name != folder.sd_name  # the object cache keeps their runs apart


def test_a_lora_changes_the_image_and_weight_zero_does_not(files):
    plain = _image(_load(sd_model=str(files["folder"])))
    lora = str(files["lora"])
    with_lora = _load(sd_model=str(files["folder"]), loras=[LoraSettings(path=lora, weight=1.0)])
    assert not np.array_equal(_image(with_lora), plain)
    # Fused: the UNet is a plain diffusers UNet again, so LMD's attention processors apply as usual.
    assert not any("lora" in name for name, _ in with_lora.unet.named_parameters())
    off = _load(
        sd_model=str(files["file"]), sd_config=str(files["config"]), loras=[LoraSettings(path=lora, weight=0)]
    )
    assert np.array_equal(_image(off), plain)
    assert with_lora.sd_name != off.sd_name and lora in with_lora.sd_name


def test_unusable_community_files_are_config_errors_naming_the_setting(files, tmp_path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(ConfigError) as err:
        _load(sd_model=str(pickle), sd_config=str(files["config"]))
    assert ".safetensors" in str(err.value) and "LMD_DIFFUSION__SD_MODEL" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _load(sd_model=str(files["folder"]), loras=[LoraSettings(path=str(tmp_path / "missing.safetensors"))])
    assert "diffusion.loras[0]" in str(err.value) and "LMD_DIFFUSION__LORAS" in str(err.value)


def test_loras_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMD_DIFFUSION__LORAS", '[{"path": "/models/style.safetensors", "weight": 0.8}]')
    assert load_settings().diffusion.loras == [LoraSettings(path="/models/style.safetensors", weight=0.8)]
    monkeypatch.setenv("LMD_DIFFUSION__LORAS", '[{"path": "/models/style.safetensors", "weight": 9}]')
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "LMD_DIFFUSION__LORAS" in str(err.value)
