"""Reading layouts from files and text that users hand us (JSON or the LMD text format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def load_json(text: str) -> Any:
    """``json.loads``, or a LayoutError saying what is wrong with the text.

    Python reads no integer of more than 4300 digits (a guard against slow conversions) and says
    so with a bare ValueError, not a JSON error: that is a number too long, not malformed JSON.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutError(f"the JSON is malformed ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise LayoutError("the JSON is nested too deeply to be a layout") from None
    except ValueError:
        raise LayoutError("a number in the JSON is too long to be a coordinate or an id") from None


def read_text_file(path: Path, what: str = "file") -> str:
    """A UTF-8 text file users hand us, or a LayoutError that says plainly what is wrong with it.

    A leading byte-order mark (Windows editors write one) is dropped.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LayoutError(f"cannot read {path}: there is no such {what}") from None
    except IsADirectoryError:
        raise LayoutError(f"cannot read {path}: it is a folder, not a {what}") from None
    except OSError as exc:
        raise LayoutError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_text(data, str(path))


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text from a file's bytes (``name`` says which, in the error), without a leading
    byte-order mark (Windows editors write one)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise LayoutError(f"cannot read {name}: it is binary data, not UTF-8 text")
    return text.removeprefix("\ufeff")


def load_layout_text(text: str, *, limits: LayoutLimits | None = None) -> RepairResult:
    """A layout from JSON (validated strictly) or LMD text (read and repaired, with notes)."""
    text = text.removeprefix("\ufeff")  # a byte-order mark would hide the JSON's opening brace
    if len(text) > MAX_TEXT_CHARS:
        raise LayoutError(f"the layout is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    if not text.strip():  # else the LMD text reader answers as if the planner had said nothing
        raise LayoutError("the layout is empty: give it as JSON or in the LMD text format")
    if text.lstrip().startswith("{"):
        load_json(text)
        return RepairResult(parse_layout_json(text, limits=limits))
    return read_lmd_text(text, limits=limits)


def load_layout_file(path: Path, *, limits: LayoutLimits | None = None) -> RepairResult:
    return load_layout_text(read_text_file(path, "layout file"), limits=limits)
