"""Aspect ratios through the scene service: the planner gets the canvas, the plan, the overlay
and the render follow it; "make it wide" re-plans the scene on a wide canvas."""

from __future__ import annotations

import io

from PIL import Image

from lmd_bot.layout.canvas import Aspect, Canvas
from lmd_bot.overlay import object_color
from lmd_bot.services import PlanView
from tests.services.conftest import ALICE, running_core


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


async def test_a_tall_scene_is_planned_drawn_and_rendered_on_its_canvas(core):
    app, notes = core
    plan = await app.scenes.imagine(ALICE, "a red apple, a blue cup", notes, aspect=Aspect.TALL)
    assert isinstance(plan, PlanView)
    assert app.planner.canvases == [Canvas(320, 512)]
    layout = plan.round.layout
    assert (layout.width, layout.height) == (320, 512)
    assert all(o.box.inside(320, 512) for o in layout.objects)
    width, height = _size(plan.overlay_png)
    assert width == 320 and height >= 512  # the canvas, and the legend strip under it
    result = await notes.result_of(plan.job.id)
    assert _size(result.image_png) == (320, 512) and _size(result.overlay_png)[0] == 320
    image = Image.open(io.BytesIO(result.image_png)).convert("RGB")
    for obj in layout.objects:  # the preview renderer fills each box: each is where it was planned
        b = obj.box
        assert image.getpixel((b.x + b.w // 2, b.y + b.h // 2)) == object_color(obj.id)


async def test_make_it_wide_replans_on_the_wide_canvas_and_later_rounds_keep_it(core):
    app, notes = core
    plan = await app.scenes.imagine(ALICE, "a red apple, a blue cup", notes, seed=5)
    assert app.planner.canvases == [Canvas(512, 512)]
    wide = await app.scenes.instruct(ALICE, plan.scene.id, "make it wide", notes)
    assert isinstance(wide, PlanView) and app.planner.canvases[-1] == Canvas(512, 320)
    assert (wide.round.layout.width, wide.round.layout.height) == (512, 320)
    assert [o.id for o in wide.round.layout.objects] == [1, 2]
    assert wide.changes == "canvas: 512x512 → 512x320"
    result = await notes.result_of(wide.job.id)
    assert _size(result.image_png) == (512, 320) and result.job.seed == 5
    later = await app.scenes.instruct(ALICE, plan.scene.id, "add a cat", notes)
    assert app.planner.canvases[-1] is None  # not asked: the scene keeps its canvas
    assert (later.round.layout.width, later.round.layout.height) == (512, 320)


async def test_the_planner_canvas_is_in_its_512_frame_whatever_the_image_size(tmp_path):
    async with running_core(tmp_path, diffusion={"mode": "lmd", "steps": 4, "size": 256}) as (app, notes):
        square = await app.scenes.imagine(ALICE, "a red apple", notes)
        wide = await app.scenes.imagine(ALICE, "a blue cup", notes, aspect=Aspect.WIDE)
        assert app.planner.canvases == [Canvas(512, 512), Canvas(512, 320)]
        assert (square.round.layout.width, wide.round.layout.height) == (512, 320)
