"""The Renderer the bot and the CLI use, built from the settings with tiny models."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.renderer import build_renderer, canvas_size
from lmd_bot.errors import CancelledError, OutOfMemoryError, RenderError
from lmd_bot.layout.canvas import Aspect, canvas_for
from lmd_bot.layout.schema import LayoutLimits, SceneLayout
from lmd_bot.rendering import RenderMode, RenderRequest

CAT = {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]}
BALL = {"id": 2, "caption": "a red ball", "box": [300, 330, 150, 150]}


def _layout(*objects, **extra):
    return SceneLayout.model_validate({"objects": list(objects), "background": "A garden", **extra})


@pytest.fixture(scope="module")
def renderer():
    return build_renderer(DiffusionSettings(size=256, use_sam=False), tiny=True)


def test_lmd_render_reports_progress_previews_and_costs(renderer):
    events = []
    out = renderer.render(
        RenderRequest(layout=_layout(CAT, BALL), mode=RenderMode.LMD, seed=3, steps=3), progress=events.append
    )
    assert out.image.size == (256, 256)
    # Both objects are denoised together: one batched step each, then the overall run (without
    # SAM, the per-object runs take every step: their masks come from the attention).
    assert [(e.stage, e.step, e.total) for e in events] == [("objects", i, 6) for i in range(1, 4)] + [
        ("overall", i, 6) for i in range(4, 7)
    ]
    assert all(e.preview().size == (64, 64) for e in events)  # 32x32 latents, doubled
    assert out.stats["unet_forwards"] == 6 and out.stats["guided_passes"] > 0
    assert out.stats["object_runs"] == 2 and out.stats["object_cache_hits"] == 0
    assert out.stats["sam_calls"] == 0 and out.stats["peak_rss_mb"] > 0
    assert out.seconds > 0


def test_sd_mode_draws_the_original_prompt_and_ignores_the_layout(renderer):
    def sd(layout, prompt):
        request = RenderRequest(layout=layout, prompt=prompt, mode=RenderMode.SD, seed=4, steps=2)
        return np.asarray(renderer.render(request).image)

    with_objects = sd(_layout(CAT, BALL), "a cat and a ball in a garden")
    assert np.array_equal(with_objects, sd(_layout(), "a cat and a ball in a garden"))
    assert not np.array_equal(with_objects, sd(_layout(CAT, BALL), "a dog in a garden"))


@pytest.mark.parametrize("mode", [RenderMode.LMD_PLUS, RenderMode.FAST])
def test_gligen_modes_render_with_progress_and_costs(renderer, mode):
    events = []
    out = renderer.render(
        RenderRequest(layout=_layout(CAT, BALL), mode=mode, seed=2, steps=2), progress=events.append
    )
    assert out.image.size == (256, 256)
    stages = [e.stage for e in events]
    if mode is RenderMode.LMD_PLUS:
        assert stages == ["objects"] * 2 + ["overall"] * 2
        assert out.stats["object_runs"] == 2 and out.stats["unet_forwards"] == 4
    else:
        assert stages == ["overall"] * 2
        assert out.stats["object_runs"] == 0 and out.stats["unet_forwards"] == 2


def test_a_follow_up_round_reuses_the_renderers_object_runs(renderer):
    first = RenderRequest(layout=_layout(CAT, BALL), mode=RenderMode.LMD_PLUS, seed=11, steps=2)
    renderer.render(first)
    moved = _layout({**CAT, "box": [100, 220, 200, 250]}, BALL)
    out = renderer.render(first.model_copy(update={"layout": moved}))
    assert out.stats["object_runs"] == 0 and out.stats["object_cache_hits"] == 2
    assert out.stats["unet_forwards"] == 2  # the overall run only


def test_more_than_thirty_objects_is_a_clear_error_for_gligen_modes(renderer):
    boxes = [[(i % 8) * 60, (i // 8) * 60, 50, 50] for i in range(31)]
    objects = [{"id": i + 1, "caption": "a cup", "box": box} for i, box in enumerate(boxes)]
    context = {"limits": LayoutLimits(max_objects=40)}  # a server may allow up to 64
    layout = {"objects": objects, "background": "A table"}
    for mode in (RenderMode.LMD_PLUS, RenderMode.FAST):
        request = RenderRequest.model_validate({"layout": layout, "mode": mode, "steps": 2}, context=context)
        with pytest.raises(RenderError) as err:
            renderer.render(request)
        assert "at most 30 objects" in err.value.user_message and "31" in err.value.user_message


def test_without_a_gligen_model_the_gligen_modes_refuse_clearly():
    renderer = build_renderer(DiffusionSettings(size=256, use_sam=False, gligen_model=""), tiny=True)
    with pytest.raises(RenderError) as err:
        renderer.render(RenderRequest(layout=_layout(CAT), mode=RenderMode.LMD_PLUS, steps=2))
    assert "aren't available" in err.value.user_message


def test_cancellation_and_failures_become_render_errors(renderer):
    request = RenderRequest(layout=_layout(CAT), mode=RenderMode.LMD, steps=3)
    with pytest.raises(CancelledError):
        renderer.render(request, should_cancel=lambda: True)

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(OutOfMemoryError) as err:
        renderer.render(request, should_cancel=out_of_memory)
    assert "GPU memory" in err.value.user_message

    def broken():
        raise ValueError("bad tensor")

    with pytest.raises(RenderError) as err:
        renderer.render(request, should_cancel=broken)
    assert not isinstance(err.value, OutOfMemoryError) and err.value.user_message == "Rendering failed."


def test_a_description_too_long_for_clip_is_a_user_error(renderer):
    captions = [f"a very small shiny red and green striped toy number {i}" for i in range(8)]
    objects = [{"id": i + 1, "caption": c, "box": [i * 60, 10, 50, 50]} for i, c in enumerate(captions)]
    with pytest.raises(RenderError) as err:
        renderer.render(RenderRequest(layout=_layout(*objects), mode=RenderMode.LMD, steps=2))
    assert "too long" in err.value.user_message


def test_canvas_follows_the_layout_aspect_in_multiples_of_64():
    assert canvas_size(_layout(), 512) == (512, 512)
    assert canvas_size(_layout(width=768, height=512), 512) == (320, 512)
    assert canvas_size(_layout(width=512, height=1024), 512) == (512, 256)
    for aspect in Aspect:  # a scene planned on its aspect's canvas renders on that very canvas
        canvas = canvas_for(aspect, 512)
        assert canvas_size(_layout(width=canvas.width, height=canvas.height), 512) == (
            canvas.height,
            canvas.width,
        )


def test_non_square_layout_renders_at_its_aspect(renderer):
    out = renderer.render(
        RenderRequest(layout=_layout(CAT, width=512, height=1024), mode=RenderMode.LMD, steps=2)
    )
    assert out.image.size == (128, 256)


def test_importing_the_renderer_module_loads_no_torch():
    code = "import sys, lmd_bot.diffusion.renderer; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_preview_is_decoded_only_for_the_progress_that_asks_for_one(renderer, monkeypatch):
    """The worker sends one progress message every so often; the steps in between must not pay for
    a preview (a device-to-host copy and a colour map per step)."""
    import lmd_bot.diffusion.preview as preview

    made = []
    real = preview.latent_preview
    monkeypatch.setattr(preview, "latent_preview", lambda latents: made.append(1) or real(latents))
    shown = []

    def progress(p):
        if p.step == p.total:  # as a throttled sender would: only some steps are shown
            shown.append(p.preview())

    renderer.render(RenderRequest(layout=_layout(CAT, BALL), mode=RenderMode.LMD, seed=3, steps=3), progress)
    assert len(made) == 1 and shown[0].size == (64, 64)
