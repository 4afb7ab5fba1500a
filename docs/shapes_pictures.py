"""Regenerate the README's pictures of the shapes world (``docs/images/shapes-*.png``).

::

    .venv/bin/python docs/shapes_pictures.py [--weights lmd_bot/assets/shapes] [--steps 50] [--out DIR]

Everything is rendered by the product's renderer on the shapes models in ``--weights`` (default:
the committed ones; loaded through ``diffusion.sd_model`` / ``gligen_model`` like any checkpoint,
SAM off), on the CPU, into ``--out`` (default ``docs/images``):

- ``shapes-world.png``: scenes of the world with their captions (the training data);
- ``shapes-sd-vs-lmdplus.png``: one prompt drawn by ``sd`` (from the prompt alone) and by
  ``lmd+`` (from a layout), three seeds each, the layout's boxes drawn on ``lmd+``'s;
- ``shapes-rounds.png``: a three-round scene through the per-object cache: create, move one
  object, recolour another; under each later round, how much the untouched objects' boxes
  changed (mean absolute pixel difference, 0-255) against the whole picture's change;
- ``shapes-lmdplus-vs-sd.png``: ``lmd+`` (top) and ``sd`` (bottom) on the eight fixed layouts of
  ``lmd-bot shapes score`` and the committed-model tests, at their step count and seeds.

Commit regenerated pictures only when they come from the committed weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmd_bot.config import load_settings  # noqa: E402
from lmd_bot.diffusion.renderer import build_renderer  # noqa: E402
from lmd_bot.layout.schema import SceneLayout  # noqa: E402
from lmd_bot.rendering import RenderMode, RenderRequest  # noqa: E402
from lmd_bot.shapes import scorecard  # noqa: E402
from lmd_bot.shapes.assets import WEIGHTS_DIR, shapes_diffusion_settings  # noqa: E402
from lmd_bot.shapes.world import render, sample_scene  # noqa: E402

OUT = ROOT / "docs" / "images"
SCALE = 3  # 64 px images shown at 192 px


def _big(image: Image.Image) -> Image.Image:
    return image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST)


def _boxes(image: Image.Image, layout: SceneLayout) -> Image.Image:
    big = _big(image)
    draw = ImageDraw.Draw(big)
    for obj in layout.objects:
        b = obj.box
        draw.rectangle(
            [b.x * SCALE, b.y * SCALE, b.x1 * SCALE - 1, b.y1 * SCALE - 1], outline="white", width=2
        )
        draw.text((b.x * SCALE + 3, b.y * SCALE + 2), obj.caption, fill="white")
    return big


def _sheet(rows: list[tuple[str, list[Image.Image]]], title: str) -> Image.Image:
    width = max(len(tiles) for _, tiles in rows) * (64 * SCALE + 8) + 170
    height = 30 + len(rows) * (64 * SCALE + 8)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), title, fill="black")
    for r, (label, tiles) in enumerate(rows):
        y = 30 + r * (64 * SCALE + 8)
        draw.text((8, y + 4), label, fill="black")
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (170 + c * (64 * SCALE + 8), y))
    return sheet


def world_picture() -> Image.Image:
    tiles, captions = [], []
    for seed in (1, 4, 7, 8, 12, 13):
        scene = sample_scene(seed)
        tiles.append(_big(Image.fromarray(render(scene))))
        captions.append(scene.caption)
    sheet = Image.new("RGB", (3 * (64 * SCALE + 8), 2 * (64 * SCALE + 40)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        x, y = (i % 3) * (64 * SCALE + 8), (i // 3) * (64 * SCALE + 40)
        sheet.paste(tile, (x, y))
        words = caption.split()
        half = len(words) // 2 + 1
        draw.text((x, y + 64 * SCALE + 4), " ".join(words[:half]), fill="black")
        draw.text((x, y + 64 * SCALE + 18), " ".join(words[half:]), fill="black")
    return sheet


def _layout(background: str, objects: list[tuple[str, list[int]]]) -> SceneLayout:
    return SceneLayout.model_validate(
        {
            "width": 64,
            "height": 64,
            "background": background,
            "objects": [{"id": i, "caption": c, "box": b} for i, (c, b) in enumerate(objects, start=1)],
        }
    )


def sd_vs_lmd_plus(renderer, steps: int) -> Image.Image:
    prompt = "a white wall with three red circles on the left and a blue square on the right"
    layout = _layout(
        "a white wall",
        [
            ("a red circle", [4, 4, 16, 16]),
            ("a red circle", [4, 24, 16, 16]),
            ("a red circle", [4, 44, 16, 16]),
            ("a blue square", [36, 20, 22, 22]),
        ],
    )
    rows = []
    for mode in (RenderMode.SD, RenderMode.LMD_PLUS):
        tiles = []
        for seed in (1, 2, 3):
            request = RenderRequest(layout=layout, prompt=prompt, mode=mode, seed=seed, steps=steps)
            image = renderer.render(request).image
            tiles.append(_big(image) if mode is RenderMode.SD else _boxes(image, layout))
        rows.append((mode.value, tiles))
    return _sheet(rows, f'"{prompt}" (seeds 1-3)')


def _change(a: np.ndarray, b: np.ndarray, boxes: list[list[int]]) -> str:
    """Mean absolute pixel difference inside ``boxes`` (x, y, w, h) and over the whole picture."""
    inside = np.concatenate(
        [np.abs(a[y : y + h, x : x + w] - b[y : y + h, x : x + w]).reshape(-1) for x, y, w, h in boxes]
    )
    return f"kept boxes {inside.mean():.1f} / picture {np.abs(a - b).mean():.1f}"


def three_rounds(renderer, steps: int) -> Image.Image:
    triangle = ("a yellow triangle", [6, 8, 20, 20])
    circle = ("a green circle", [38, 8, 20, 20])
    square = ("a purple square", [22, 38, 20, 20])
    moved = ("a green circle", [40, 40, 20, 20])
    rounds = [
        ("1: create", _layout("a gray wall", [triangle, circle, square]), []),
        # the triangle and the square are untouched
        ("2: move the circle", _layout("a gray wall", [triangle, moved, square]), [triangle[1], square[1]]),
        # the circle (where round 2 put it) and the square are untouched
        (
            "3: make the triangle blue",
            _layout("a gray wall", [("a blue triangle", triangle[1]), moved, square]),
            [moved[1], square[1]],
        ),
    ]
    tiles, pixels, notes = [], [], []
    for _, layout, kept in rounds:
        request = RenderRequest(layout=layout, prompt="", mode=RenderMode.LMD_PLUS, seed=5, steps=steps)
        image = renderer.render(request).image
        tiles.append(_boxes(image, layout))
        pixels.append(np.asarray(image).astype(float))
        if kept:
            notes.append(f"round {len(pixels)} vs {len(pixels) - 1}: {_change(pixels[-2], pixels[-1], kept)}")
    title = "One scene, three rounds (lmd+, seed 5): " + "; ".join(label for label, *_ in rounds)
    sheet = _sheet([("", tiles)], title)
    canvas = Image.new("RGB", (sheet.width, sheet.height + 20 * len(notes) + 8), "white")
    canvas.paste(sheet, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, note in enumerate(notes):
        draw.text((170, sheet.height + 4 + 20 * n), note, fill="black")
    return canvas


def fixed_layouts(renderer) -> Image.Image:
    """lmd+ (top, boxes drawn) and sd (bottom) on the scorecard's eight layouts."""
    rows = []
    for mode in (RenderMode.LMD_PLUS, RenderMode.SD):
        results = scorecard.render_cases(renderer, mode)
        tiles = []
        for result, (_, background, objects, _) in zip(results, scorecard.CASES, strict=True):
            layout = scorecard.layout_of(background, objects)
            tiles.append(_boxes(result.image, layout) if mode is RenderMode.LMD_PLUS else _big(result.image))
        found = sum(p for r in results for p in r.placed)
        total = sum(len(r.placed) for r in results)
        rows.append((f"{mode.value}: {found}/{total} found", tiles))
    return _sheet(rows, f"The eight fixed layouts of lmd-bot shapes score ({scorecard.STEPS} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the pictures (default docs/images)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    world_picture().save(args.out / "shapes-world.png")
    settings = load_settings().diffusion.model_copy(update={"device": "cpu", "dtype": "float32"})
    renderer = build_renderer(shapes_diffusion_settings(settings, args.weights))
    sd_vs_lmd_plus(renderer, args.steps).save(args.out / "shapes-sd-vs-lmdplus.png")
    three_rounds(renderer, args.steps).save(args.out / "shapes-rounds.png")
    fixed_layouts(renderer).save(args.out / "shapes-lmdplus-vs-sd.png")
    print(f"wrote {args.out}/shapes-{{world,sd-vs-lmdplus,rounds,lmdplus-vs-sd}}.png")  # noqa: T201


if __name__ == "__main__":
    main()
