"""Reading layouts from files and text that users hand us (JSON or the LMD text format)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from lmd_bot.errors import LayoutError
from lmd_bot.layout.lmd_text import MAX_TEXT_CHARS, read_lmd_text
from lmd_bot.layout.repair import RepairResult
from lmd_bot.layout.schema import LayoutLimits, SceneLayout


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Short, readable lines for a pydantic error: where, and what is wrong."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "layout"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return lines


def parse_layout_json(text: str, *, limits: LayoutLimits | None = None) -> SceneLayout:
    """Strictly validate a layout in our JSON form; errors name each bad field."""
    try:
        return SceneLayout.model_validate_json(text, context={"limits": limits or LayoutLimits()})
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise LayoutError("; ".join(problems[:5]), problems=problems) from None


def load_layout_text(text: str, *, limits: LayoutLimits | None = None) -> RepairResult:
    """A layout from JSON (validated strictly) or LMD text (read and repaired, with notes)."""
    if len(text) > MAX_TEXT_CHARS:
        raise LayoutError(f"the layout is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    if text.lstrip().startswith("{"):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise LayoutError(f"the JSON is malformed ({exc.msg} at line {exc.lineno})") from None
        return RepairResult(parse_layout_json(text, limits=limits))
    return read_lmd_text(text, limits=limits)


def load_layout_file(path: Path, *, limits: LayoutLimits | None = None) -> RepairResult:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from None
    return load_layout_text(text, limits=limits)
