"""Rendering the benchmark: one image per prompt, seeded with the prompt's index.

Images go where the reference puts them, ``{out}/{index}/img_0.png``, so its tools and ours read
the same folders. The run is resumable: an index whose image exists is skipped, and an image is
written to a temporary name and renamed, so an interrupted run never leaves half a PNG. The
settings that shape the images (mode, steps, guidance, models, the layouts file) are recorded in
``{out}/settings.json``; a folder made with other settings is refused rather than mixed, because
one benchmark run must come from one configuration.

A render that runs out of memory or fails is reported and the run goes on (the reference does
the same for OOM); rerunning fills the gaps.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lmd_bot.errors import LayoutError, LmdError, RenderError
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.responses import AnswerCursor
from lmd_bot.layout import SceneLayout, read_lmd_text
from lmd_bot.rendering import Refine, Renderer, RenderMode, RenderRequest

log = logging.getLogger(__name__)

IMAGE_NAME = "img_0.png"
SETTINGS_NAME = "settings.json"


class GenerateSettings(BaseModel):
    """What makes two benchmark images comparable; recorded once per output folder."""

    mode: RenderMode
    steps: int
    guidance_scale: float
    seed_rule: str = "seed = prompt index"
    layouts_file: str | None = None
    layouts_sha256: str | None = None
    renderer: dict[str, Any] = Field(default_factory=dict)


class GenerateError(LmdError):
    user_message = "The benchmark images can't be generated."

    def __init__(self, detail: str) -> None:
        super().__init__(detail, user_message=detail)


@dataclass
class GenerateSummary:
    rendered: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # the image was already there
    failed: dict[int, str] = field(default_factory=dict)  # index -> why
    seconds: float = 0.0


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def benchmark_layouts(
    prompts: Sequence[BenchmarkPrompt], responses: dict[str, list[str]]
) -> tuple[dict[int, SceneLayout], dict[int, str]]:
    """The layout to render for each prompt, read as the bot reads an LLM answer (repaired, with the
    reference's rescale of out-of-canvas boxes); unusable answers give way to the next recorded one.
    Returns the layouts by index and, for prompts without one, why."""
    cursor = AnswerCursor(responses)
    layouts: dict[int, SceneLayout] = {}
    problems: dict[int, str] = {}
    for item in prompts:
        errors = []
        while (entry := cursor.next(item.prompt)) is not None:
            try:
                layouts[item.index] = read_lmd_text(entry[1]).layout
                break
            except LayoutError as exc:
                errors.append(f"answer {entry[0] + 1}: {exc}")
        if item.index not in layouts:
            problems[item.index] = "; ".join(errors) or "no recorded answer for this prompt"
    return layouts, problems


def prepare_output(out_dir: Path, settings: GenerateSettings) -> None:
    """Create the folder and record the settings, or check them against those already recorded."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SETTINGS_NAME
    current = settings.model_dump(mode="json")
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GenerateError(f"{path} is unreadable ({exc}); move it away or use another folder") from None
        changed = sorted(k for k in set(current) | set(recorded) if current.get(k) != recorded.get(k))
        if changed:
            details = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise GenerateError(
                f"{out_dir} holds images made with other settings ({details}). "
                "Use another --out folder, or rerun with the recorded settings."
            )
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2), encoding="utf-8")
    tmp.replace(path)


def image_path(out_dir: Path, index: int) -> Path:
    return out_dir / str(index) / IMAGE_NAME


def generate_images(
    prompts: Sequence[BenchmarkPrompt],
    layouts: dict[int, SceneLayout],
    renderer: Renderer,
    out_dir: Path,
    settings: GenerateSettings,
    *,
    on_image: Callable[[BenchmarkPrompt, str], None] | None = None,
) -> GenerateSummary:
    """Render every prompt that has a layout and no image yet. ``on_image(prompt, status)`` reports
    each one ("rendered", "skipped", "failed: ...")."""
    prepare_output(out_dir, settings)
    summary = GenerateSummary()
    start = time.perf_counter()
    for item in prompts:
        target = image_path(out_dir, item.index)
        if target.exists():
            summary.skipped.append(item.index)
            status = "skipped"
        elif item.index not in layouts:
            summary.failed[item.index] = "no usable layout"
            status = "failed: no usable layout"
        else:
            status = _render_one(item, layouts[item.index], renderer, target, settings, summary)
        if on_image:
            on_image(item, status)
    summary.seconds = time.perf_counter() - start
    return summary


def _render_one(
    item: BenchmarkPrompt,
    layout: SceneLayout,
    renderer: Renderer,
    target: Path,
    settings: GenerateSettings,
    summary: GenerateSummary,
) -> str:
    request = RenderRequest(
        layout=layout,
        prompt=item.prompt,
        mode=settings.mode,
        seed=item.seed,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        # The renderer's settings, as recorded, say whether images are refined (eval generate --refine).
        refine=settings.renderer.get("refine") == Refine.ON.value,
    )
    try:
        output = renderer.render(request)
    except RenderError as exc:  # OutOfMemoryError included: go on, a rerun fills the gap
        log.warning("prompt %d failed to render: %s", item.index, exc)
        summary.failed[item.index] = exc.user_message
        return f"failed: {exc.user_message}"
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    output.image.save(buf, format="PNG")
    record = {
        "index": item.index,
        "prompt": item.prompt,
        "seed": item.seed,
        "layout": layout.model_dump(mode="json"),
        "seconds": round(output.seconds, 3),
        "stats": output.stats,
    }
    if output.check is not None:
        record["self_check"] = {"line": output.check.line(), **output.check.model_dump(mode="json")}
    (target.parent / "render.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)  # the image appears last: its presence means the prompt is done
    summary.rendered.append(item.index)
    return "rendered"
