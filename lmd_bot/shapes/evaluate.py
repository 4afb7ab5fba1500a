"""Running the shapes benchmark: render each prompt per mode, detect, check, report.

Per mode the images go to ``{out}/{mode}/{index}/img_0.png`` through the LMD benchmark's own
resumable generator (:func:`lmd_bot.eval.generate.generate_images`), are scored with the shapes
detector through the benchmark's own scorer (:func:`lmd_bot.eval.images.evaluate_images`), and
every mode becomes one column of one :class:`~lmd_bot.eval.report.Report` (``report.md``,
``report.json``, ``accuracy.png``). Each mode also gets a contact sheet (``sheet-{mode}.png``):
per prompt the image and the same image with the layout's boxes (white) and the detections
(their colour), failures first.

With a self-check (``checked``), every ``lmd`` and ``lmd+`` mode gets a second column,
``{mode} + self-check``, rendered by a renderer that checks and retries (images in
``{out}/{mode}+check``); the report compares the two per task and gives the self-check's extra
time per image. The report names the scoring detector (always the shapes detector) and the
checking one, and flags a run checked by its own scorer (:mod:`lmd_bot.selfcheck.roles`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

import numpy as np
from PIL import Image, ImageDraw

from lmd_bot.eval.generate import GenerateSettings, generate_images, image_path
from lmd_bot.eval.images import evaluate_images
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.report import ItemResult, Report, Run
from lmd_bot.rendering import Renderer, RenderMode
from lmd_bot.selfcheck.roles import FLATTERED, roles, same_detector
from lmd_bot.shapes.benchmark import plan_layout
from lmd_bot.shapes.detector import ShapesDetector, detect
from lmd_bot.shapes.world import PALETTE

_TILE = 160  # px per image in the sheet
_COLUMNS = 4
SCORER = "shapes detector"
CHECKED_MODES = (RenderMode.LMD, RenderMode.LMD_PLUS)  # the modes whose objects can be re-generated


@dataclass(frozen=True)
class CheckedRuns:
    """The self-checking renderer (same pipeline and cache as the plain one) and its detector."""

    renderer: Renderer
    detector: str  # the checking detector's name


@dataclass(frozen=True)
class CheckComparison:
    mode: RenderMode
    gains: dict[str, float | None]  # task (and "average") -> accuracy points with minus without
    extra_seconds: float | None  # mean self-check time per image (detection and re-renders)
    retries: float | None  # mean re-renders per image

    def line(self) -> str:
        cells = ", ".join(f"{k} {'–' if v is None else f'{v:+.1f}'}" for k, v in self.gains.items())
        extra = "–" if self.extra_seconds is None else f"{self.extra_seconds:.2f} s"
        retries = "–" if self.retries is None else f"{self.retries:.2f}"
        return (
            f"{self.mode.value}: self-check gain (points) {cells}; extra time per image {extra}, "
            f"re-renders per image {retries}"
        )


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
    checked: CheckedRuns | None = None,
) -> Report:
    layouts = {p.index: plan_layout(p) for p in prompts}
    detector = ShapesDetector()
    runs = []
    comparisons = []

    def column(mode: RenderMode, name: str, key: str, use: Renderer, facts: dict) -> Run:
        folder = out_dir / key
        settings = GenerateSettings(
            mode=mode,
            steps=steps,
            guidance_scale=guidance_scale,
            layouts_file="template planner (lmd_bot.shapes.benchmark.plan_layout)",
            renderer=facts,
        )
        generate_images(
            prompts,
            layouts,
            use,
            folder,
            settings,
            on_image=(lambda p, status: on_image(mode, p, status)) if on_image else None,
        )
        items = evaluate_images(prompts, folder, detector)
        (out_dir / f"sheet-{key}.png").write_bytes(contact_sheet(items, layouts, folder))
        return Run(name=name, items=items)

    for mode in modes:
        plain = column(mode, mode.value, mode.value, renderer, renderer_facts)
        runs.append(plain)
        if checked is None or mode not in CHECKED_MODES:
            continue
        name = f"{mode.value} + self-check"
        if same_detector(SCORER, checked.detector):
            name += f" ({FLATTERED})"
        facts = {**renderer_facts, "self_check": checked.detector}
        key = f"{mode.value}+check"
        with_check = column(mode, name, key, checked.renderer, facts)
        runs.append(with_check)
        comparisons.append(compare(mode, plain, with_check, out_dir / key))

    role_settings, notes = roles(SCORER, checked.detector if checked else None)
    notes += [c.line() for c in comparisons]
    return Report(
        stage="images",
        title="Shapes benchmark: the LMD benchmark's tasks in the shapes world",
        settings={
            "prompts": f"{len(prompts)} of 400 (lmd_bot/shapes/benchmark.py)",
            "layouts": "template planner",
            "detector": "shapes detector (colour segmentation + shape geometry)",
            **role_settings,
            "steps": steps,
            "guidance scale": guidance_scale,
            **renderer_facts,
        },
        runs=runs,
        notes=notes,
    )


def compare(mode: RenderMode, without: Run, with_check: Run, folder: Path) -> CheckComparison:
    """Accuracy gain per task, and the self-check's mean extra time and re-renders per image (from
    each image's ``render.json``)."""
    before, after = without.accuracies(), with_check.accuracies()
    gains = {
        key: None if before[key] is None or after[key] is None else after[key] - before[key] for key in before
    }
    seconds, retries = [], []
    for record in sorted(folder.glob("*/render.json")):
        stats = json.loads(record.read_text(encoding="utf-8")).get("stats", {})
        if "check_seconds" in stats:
            seconds.append(stats["check_seconds"])
            retries.append(stats.get("check_retries", 0.0))
    return CheckComparison(
        mode=mode,
        gains=gains,
        extra_seconds=fmean(seconds) if seconds else None,
        retries=fmean(retries) if retries else None,
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
