"""Stage-1+2 evaluation: detect the prompt's objects in each benchmark image and check them.

Each prompt folder must hold exactly one ``img_*.png`` (the reference's rule); a folder with none
or several is reported as not evaluated, not as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from lmd_bot.eval.predicates import check
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.report import ItemResult

if TYPE_CHECKING:
    from lmd_bot.eval.detector import Detector


def find_image(image_dir: Path, index: int) -> tuple[Path | None, str]:
    """The prompt's image, or None and why not."""
    matches = sorted((image_dir / str(index)).glob("img_*.png"))
    if not matches:
        return None, f"no image in {image_dir / str(index)}"
    if len(matches) > 1:
        return None, f"{len(matches)} images in {image_dir / str(index)}; the benchmark wants one"
    return matches[0], ""


def evaluate_images(
    prompts: Sequence[BenchmarkPrompt],
    image_dir: Path,
    detector: Detector,
    *,
    on_item: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    results = []
    for item in prompts:
        path, why = find_image(image_dir, item.index)
        base = {"index": item.index, "task": item.task, "prompt": item.prompt}
        if path is None:
            result = ItemResult(**base, passed=None, expected=check(item, []).expected, found=why)
        else:
            source = str(path.relative_to(image_dir))
            try:
                with Image.open(path) as image:
                    boxes = detector.detect(image, item.detector_queries())
            except (OSError, UnidentifiedImageError) as exc:
                result = ItemResult(**base, passed=None, found=f"unreadable image: {exc}", source=source)
            else:
                verdict = check(item, boxes)
                result = ItemResult(
                    **base,
                    passed=verdict.passed,
                    expected=verdict.expected,
                    found=verdict.found,
                    source=source,
                )
        if on_item:
            on_item(result)
        results.append(result)
    return results
