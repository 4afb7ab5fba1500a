"""Running the shapes benchmark: render each prompt per mode, detect, check, report.

Per mode the images go to ``{out}/{mode}/{index}/img_0.png`` through the LMD benchmark's own
resumable generator (:func:`lmd_bot.eval.generate.generate_images`), are scored with the shapes
detector through the benchmark's own scorer (:func:`lmd_bot.eval.images.evaluate_images`), and
every mode becomes one column of one :class:`~lmd_bot.eval.report.Report` (``report.md``,
``report.json``, ``accuracy.png``). Each mode also gets a contact sheet (``sheet-{mode}.png``):
per prompt the image and the same image with the layout's boxes (white) and the detections
(their colour), failures first.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lmd_bot.eval.generate import GenerateSettings, generate_images, image_path
from lmd_bot.eval.images import evaluate_images
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.report import ItemResult, Report, Run
from lmd_bot.rendering import Renderer, RenderMode
from lmd_bot.shapes.benchmark import plan_layout
from lmd_bot.shapes.detector import ShapesDetector, detect
from lmd_bot.shapes.world import PALETTE

_TILE = 160  # px per image in the sheet
_COLUMNS = 4


def run_benchmark(
    prompts: Sequence[BenchmarkPrompt],
    modes: Sequence[RenderMode],
    renderer: Renderer,
    out_dir: Path,
    *,
    steps: int,
    guidance_scale: float,
    renderer_facts: dict,
    on_image: Callable[[RenderMode, BenchmarkPrompt, str], None] | None = None,
) -> Report:
    layouts = {p.index: plan_layout(p) for p in prompts}
    detector = ShapesDetector()
    runs = []
    for mode in modes:
        folder = out_dir / mode.value
        settings = GenerateSettings(
            mode=mode,
            steps=steps,
            guidance_scale=guidance_scale,
            layouts_file="template planner (lmd_bot.shapes.benchmark.plan_layout)",
            renderer=renderer_facts,
        )
        generate_images(
            prompts,
            layouts,
            renderer,
            folder,
            settings,
            on_image=(lambda p, status, mode=mode: on_image(mode, p, status)) if on_image else None,
        )
        items = evaluate_images(prompts, folder, detector)
        runs.append(Run(name=mode.value, items=items))
        (out_dir / f"sheet-{mode.value}.png").write_bytes(contact_sheet(items, layouts, folder))
    return Report(
        stage="images",
        title="Shapes benchmark: the LMD benchmark's tasks in the shapes world",
        settings={
            "prompts": f"{len(prompts)} of 400 (lmd_bot/shapes/benchmark.py)",
            "layouts": "template planner",
            "detector": "shapes detector (colour segmentation + shape geometry)",
            "steps": steps,
            "guidance scale": guidance_scale,
            **renderer_facts,
        },
        runs=runs,
    )


def contact_sheet(items: Sequence[ItemResult], layouts: dict, image_dir: Path) -> bytes:
    """Failures first, then passes, then prompts without an image; two tiles per prompt."""
    order = sorted(items, key=lambda item: {False: 0, True: 1, None: 2}[item.passed])
    rows = (len(order) + _COLUMNS - 1) // _COLUMNS
    cell_w, cell_h = 2 * _TILE + 12, _TILE + 34
    sheet = Image.new("RGB", (max(1, _COLUMNS * cell_w), max(1, rows * cell_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for n, item in enumerate(order):
        x, y = (n % _COLUMNS) * cell_w, (n // _COLUMNS) * cell_h
        path = image_path(image_dir, item.index)
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[item.passed]
        colour = {True: "#15803d", False: "#dc2626", None: "#6b7280"}[item.passed]
        draw.text((x + 4, y + 2), f"#{item.index} {verdict}", fill=colour)
        draw.text((x + 4, y + 14), item.prompt[:52], fill="black")
        if not path.exists():
            continue
        with Image.open(path) as img:
            image = img.convert("RGB")
        big = image.resize((_TILE, _TILE), Image.Resampling.NEAREST)
        sheet.paste(big, (x, y + 30))
        sheet.paste(_annotated(image, layouts.get(item.index)), (x + _TILE + 4, y + 30))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _annotated(image: Image.Image, layout) -> Image.Image:
    scale = _TILE / image.width
    big = image.resize((_TILE, _TILE), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    if layout is not None:
        for obj in layout.objects:
            b = obj.box
            draw.rectangle([b.x * scale, b.y * scale, b.x1 * scale - 1, b.y1 * scale - 1], outline="white")
    for d in detect(np.asarray(image)):
        x0, y0, x1, y1 = (v * scale for v in d.box)
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=PALETTE[d.colour], width=2)
        draw.text((x0 + 2, y0 + 1), d.shape.value[:3], fill="black")
    return big
