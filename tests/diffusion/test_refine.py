"""SDXL refinement after the render, on a tiny random SDXL-refiner-shaped pipeline."""

import numpy as np
import pytest

from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.loading import load_refiner
from lmd_bot.diffusion.refine import REFINE_NEGATIVE, Refiner, refine_negative
from lmd_bot.diffusion.renderer import DiffusionRenderer, RefineUnavailableError, build_renderer
from lmd_bot.diffusion.tiny import tiny_refiner_pipeline
from lmd_bot.errors import CancelledError, ConfigError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode, RenderRequest

WIDE = SceneLayout.model_validate(
    {
        "objects": [{"id": 1, "caption": "a gray cat", "box": [40, 100, 200, 200]}],
        "negative": "dogs",
        "width": 512,
        "height": 320,
    }
)


@pytest.fixture(scope="module")
def refined():
    settings = DiffusionSettings(size=128, refine="on", refine_size=256, use_sam=False, gligen_model="")
    return build_renderer(settings, tiny=True)


def _request(seed=3, refine=True):
    return RenderRequest(
        layout=WIDE, prompt="a cat in a garden", mode=RenderMode.LMD, seed=seed, steps=4, refine=refine
    )


def test_the_refined_image_is_the_scene_upscaled_to_the_refine_size_and_reproducible(refined):
    events = []
    out = refined.render(_request(), progress=events.append)
    assert out.image.size == (256, 128)  # the 128x64 render, at the refine size, its aspect kept
    assert out.stats["refine_seconds"] > 0
    refine_steps = [e for e in events if e.stage == "refine"]
    assert [e.step for e in refine_steps] == [1] and refine_steps[0].total == 1  # 0.3 of 4 steps
    assert events.index(refine_steps[0]) == len(events) - 1  # after the scene's own steps
    again = refined.render(_request())
    assert np.array_equal(np.asarray(again.image), np.asarray(out.image))
    other = refined.render(_request(seed=4))
    assert not np.array_equal(np.asarray(other.image), np.asarray(out.image))


def test_refinement_changes_the_image_and_a_request_without_it_is_the_render_as_it_was(refined):
    plain = refined.render(_request(refine=False))  # the worker has a refiner; this job asks none
    assert plain.image.size == (128, 64) and "refine_seconds" not in plain.stats
    alone = DiffusionRenderer(refined.pipeline, size=128).render(_request(refine=False))
    assert np.array_equal(np.asarray(alone.image), np.asarray(plain.image))
    upscaled = np.asarray(plain.image.resize((256, 128)))
    assert not np.array_equal(np.asarray(refined.render(_request()).image), upscaled)
    with pytest.raises(RefineUnavailableError) as err:  # a worker without a refiner says so
        DiffusionRenderer(refined.pipeline, size=128).render(_request())
    assert "diffusion.refine" in err.value.user_message


def test_refining_a_finished_image_later_is_what_refining_it_at_once_gives(refined):
    """The ✨ Refine job: the round's image refined alone, nothing rendered again."""
    import io

    buf = io.BytesIO()
    refined.render(_request(refine=False)).image.save(buf, format="PNG")
    events = []
    later = refined.render(
        RenderRequest.model_validate_json(
            _request().model_copy(update={"source_png": buf.getvalue()}).model_dump_json()
        ),
        progress=events.append,
    )
    assert later.image.size == (256, 128)
    assert {e.stage for e in events} == {"refine"} and "unet_forwards" not in later.stats
    assert np.array_equal(np.asarray(later.image), np.asarray(refined.render(_request()).image))
    with pytest.raises(ValueError, match="refine=True"):  # an image to refine is refined
        RenderRequest.model_validate({**_request(refine=False).model_dump(), "source_png": b"x"})


def test_a_cancel_while_refining_stops_the_render(refined):
    seen = []
    with pytest.raises(CancelledError):
        refined.render(
            _request(), progress=seen.append, should_cancel=lambda: any(e.stage == "refine" for e in seen)
        )


def test_the_negative_prompt_and_strength_follow_the_reference():
    assert refine_negative("dogs") == f"dogs, {REFINE_NEGATIVE}" and refine_negative("") == REFINE_NEGATIVE
    pipe = tiny_refiner_pipeline()
    from PIL import Image

    image = Image.new("RGB", (128, 128), (200, 40, 40))
    weak = Refiner(pipe, strength=0.3, size=128).refine(image, "a cat", "", seed=1, steps=10)
    strong = Refiner(pipe, strength=0.9, size=128).refine(image, "a cat", "", seed=1, steps=10)
    assert weak.size == strong.size == (128, 128)
    assert not np.array_equal(np.asarray(weak), np.asarray(strong))


def test_the_refiner_loads_from_a_local_folder_and_a_bad_one_names_the_setting(tmp_path):
    import torch

    tiny_refiner_pipeline().save_pretrained(tmp_path / "refiner")
    settings = DiffusionSettings(refiner_model=str(tmp_path / "refiner"))
    pipe = load_refiner(settings, torch.device("cpu"), torch.float32)
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline" and pipe.text_encoder is None
    with pytest.raises(ConfigError) as err:
        load_refiner(
            DiffusionSettings(refiner_model=str(tmp_path / "none")), torch.device("cpu"), torch.float32
        )
    assert "LMD_DIFFUSION__REFINER_MODEL" in str(err.value)
