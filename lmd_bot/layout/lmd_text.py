"""The LMD text format, read exactly as the reference reads it (docs/method.md, "The LMD text format").

::

    [('a blue dog', [50, 200, 200, 300]), ('a white bowl', [350, 250, 100, 50])]
    Background prompt: A realistic scene
    Negative prompt: cats

Reading never evaluates code: the object list is parsed with :func:`ast.parse` and only a
whitelist of literal nodes (strings, numbers, a unary minus, tuples, lists) is accepted; anything
else (names, calls, attribute access, operators) is an error.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from lmd_bot.errors import LayoutError
from lmd_bot.layout.repair import RawObject, RepairResult, repair_layout
from lmd_bot.layout.schema import DEFAULT_CANVAS, LayoutLimits, SceneLayout

# A layout of 64 objects is about 4 KB; far longer input is not a layout and would only cost time.
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class ParsedLmdText:
    objects: list[RawObject]
    background: str
    negative: str


def _literal(node: ast.AST) -> object:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | float):
        if isinstance(node.value, bool):
            raise LayoutError("booleans are not allowed in the object list")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Tuple | ast.List):
        return [_literal(elt) for elt in node.elts]
    raise LayoutError(f"unexpected {type(node).__name__} in the object list; expected literals")


def _parse_objects(text: str) -> list[RawObject]:
    stripped = text.strip()
    try:
        tree = ast.parse(stripped, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        # The reference treats blank text or "No objects" as an empty layout.
        if not stripped or "No objects" in stripped:
            return []
        raise LayoutError(f"the object list is not a Python-style list ({exc.__class__.__name__})") from None
    try:
        items = _literal(tree.body)
    except RecursionError:
        raise LayoutError("the object list is nested too deeply") from None
    if not isinstance(items, list):
        raise LayoutError("the object list must be a list of (caption, [x, y, w, h]) pairs")
    if len(items) == 2 and isinstance(items[0], str):
        items = [items]  # a single pair without the surrounding list: "('a cat', [1, 2, 3, 4])"
    objects: list[RawObject] = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise LayoutError(f"each object must be a (caption, [x, y, w, h]) pair, got {item!r:.80}")
        objects.append(RawObject(caption=item[0], box=item[1]))
    return objects


def parse_lmd_text(text: str) -> ParsedLmdText:
    """Split an LMD answer into raw objects, background and negative prompt (no validation)."""
    if len(text) > MAX_TEXT_CHARS:
        raise LayoutError(f"the text is {len(text)} characters long; a layout is far shorter")
    if "Objects: " in text:
        text = text.split("Objects: ", 1)[1]
    parts = text.split("Background prompt:")
    if len(parts) == 1:
        raise LayoutError('the text has no "Background prompt:" line')
    if len(parts) > 2:
        raise LayoutError('the text has more than one "Background prompt:" line')
    boxes_text, rest = parts
    rest_parts = rest.split("Negative prompt:")
    if len(rest_parts) > 2:
        raise LayoutError('the text has more than one "Negative prompt:" line')
    background = rest_parts[0].strip()
    negative = rest_parts[1].strip() if len(rest_parts) == 2 else ""
    if negative == "None":
        negative = ""
    return ParsedLmdText(_parse_objects(boxes_text), background, negative)


def read_lmd_text(
    text: str,
    *,
    width: int = DEFAULT_CANVAS,
    height: int = DEFAULT_CANVAS,
    limits: LayoutLimits | None = None,
) -> RepairResult:
    """Parse and repair an LMD answer into a valid layout; ids are numbered 1, 2, ... in order."""
    parsed = parse_lmd_text(text)
    return repair_layout(
        parsed.objects, parsed.background, parsed.negative, width=width, height=height, limits=limits
    )


def format_lmd_text(layout: SceneLayout) -> str:
    """Write a layout in the LMD text format; :func:`read_lmd_text` reads it back unchanged.

    The object list is the Python ``repr`` of ``[(caption, [x, y, w, h]), ...]``, exactly what
    the reference stores in its caches.
    """
    pairs = [(o.caption, o.box.as_list()) for o in layout.objects]
    return f"{pairs!r}\nBackground prompt: {layout.background}\nNegative prompt: {layout.negative}"
