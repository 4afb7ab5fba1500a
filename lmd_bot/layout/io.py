"""Reading layouts from files and text that users hand us (JSON or the LMD text format)."""

from __future__ import annotations

import codecs
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
    """A text file users hand us (:func:`decode_text`), or a LayoutError that says plainly what
    is wrong with it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LayoutError(f"cannot read {path}: there is no such {what}") from None
    except IsADirectoryError:
        raise LayoutError(f"cannot read {path}: it is a folder, not a {what}") from None
    except OSError as exc:
        raise LayoutError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_text(data, str(path))


# Byte-order marks: the file says its encoding (UTF-32's before UTF-16's, whose mark starts it).
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def decode_text(data: bytes, name: str) -> str:
    """Text from a file's bytes (``name`` says which, in the error): UTF-8, or the UTF-16 or
    UTF-32 a byte-order mark names (Windows Notepad's "Unicode" is UTF-16); the mark is dropped."""
    binary = LayoutError(f"cannot read {name}: it is binary data, not UTF-8 text")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.removeprefix(bom).decode(encoding)
            except UnicodeDecodeError:
                raise binary from None
            break
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if b"\x00" in data:
                raise binary from None
            raise LayoutError(
                f"cannot read {name}: it is not UTF-8 text (an older encoding such as Latin-1?); "
                "save it as UTF-8 and try again"
            ) from None
    if "\x00" in text:
        raise binary
    return text


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
