"""Layout overlays: the scene's boxes drawn over an image or over a blank canvas (the plan).

Each object gets the colour of its id (stable across rounds), an outline with a translucent fill,
and a label chip ("2 · a red apple") placed where it collides with no other label. Below the
picture a legend strip gives the background and the negative prompt. The output is PNG bytes.

Fonts ship with the package (``assets/fonts``, see its README): DejaVu Sans for Latin, Greek,
Cyrillic, Armenian, Hebrew and Arabic, WenQuanYi Micro Hei for Chinese, Japanese and Korean, and
a small colour-emoji font. Each character is drawn with the first font that has it (runs of one
font are drawn together); right-to-left text is shaped and ordered by Pillow's raqm layout (with
basic layout, where Pillow lacks raqm, right-to-left runs are at least put in reading order). What
no font has is replaced by a readable stand-in ("[Devanagari text]", "[chess pawn]") instead of
empty boxes; the exact text is always in the message beside the picture.
"""

from __future__ import annotations

import bisect
import io
import json
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from lmd_bot.layout.schema import SceneLayout

FONT_DIR = Path(__file__).resolve().parent / "assets" / "fonts"

# 16 hues that stay apart from each other and readable on light and dark images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 225, 25),
    (128, 0, 0),
    (170, 255, 195),
    (0, 0, 128),
)
_BLANK = (244, 244, 246)
_GRID = (226, 226, 232)
_LEGEND_BG = (32, 34, 37)  # Discord's dark theme, so the strip reads as part of the message
_LEGEND_FG = (235, 235, 235)
_LEGEND_DIM = (160, 164, 170)


def object_color(object_id: int) -> tuple[int, int, int]:
    """The colour of an object id; the same id has the same colour in every round."""
    return PALETTE[(object_id - 1) % len(PALETTE)]


# Text fonts in order of preference, then the emoji font (a bitmap font with one 32-pixel strike,
# scaled to the label's size when drawn).
_REGULAR = ("DejaVuSans.ttf", "wqy-microhei.ttc")
_BOLD = ("DejaVuSans-Bold.ttf", "wqy-microhei.ttc")
_EMOJI = "NotoColorEmoji-32.ttf"
_EMOJI_STRIKE = 32
_EMOJI_PRESENTATION = "\ufe0f"  # after a character: draw it as an emoji
# Marks and format characters draw as part of the text run before them (accents, vowel signs,
# the Persian non-joiner) or not at all. The emoji font has no sequences, so 👩‍🚀 draws as its
# parts, without the joiner, presentation selectors or skin-tone modifiers.
_ATTACHED = {"Cf", "Mn", "Me"}
_SELECTORS = range(0xFE00, 0xFE10)
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_RTL = {"R", "AL"}


@cache
def _coverage() -> dict[str, tuple[list[int], list[int]]]:
    """Per font file, the starts and ends of the code-point ranges it has glyphs for (written
    with the fonts by ``docs/fonts.py``)."""
    data = json.loads((FONT_DIR / "coverage.json").read_text())
    return {name: ([a for a, _ in ranges], [b for _, b in ranges]) for name, ranges in data.items()}


def _has(font: str, ch: str) -> bool:
    starts, ends = _coverage()[font]
    i = bisect.bisect_right(starts, ord(ch)) - 1
    return i >= 0 and ord(ch) <= ends[i]


@cache
def _shaping() -> bool:
    """Whether Pillow lays text out with raqm (shaping, right-to-left order). Pillow's wheels
    bundle raqm but load FriBiDi from the system (Debian: ``libfribidi0``)."""
    return bool(features.check("raqm"))


@cache
def _load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    engine = ImageFont.Layout.RAQM if _shaping() else ImageFont.Layout.BASIC
    return ImageFont.truetype(str(FONT_DIR / name), size, layout_engine=engine)


@dataclass(frozen=True)
class _Run:
    text: str
    font: str  # a file in FONT_DIR


def _stand_in(chars: str) -> str:
    if len(chars) == 1 and unicodedata.category(chars)[0] == "S":
        return f"[{unicodedata.name(chars, 'symbol').lower()}]"
    script = unicodedata.name(chars[0], "UNKNOWN").split(" ")[0].capitalize()
    return f"[{script} text]"


@cache
def _runs(text: str, bold: bool) -> tuple[_Run, ...]:
    """``text`` cut into runs of one font each, what no font has replaced by a stand-in."""
    fonts = _BOLD if bold else _REGULAR
    picked: list[tuple[str, str | None]] = []  # (character, font or None)
    for i, ch in enumerate(text):
        previous = picked[-1][1] if picked else None
        if ord(ch) in _SELECTORS or (ord(ch) in _SKIN_TONES and previous == _EMOJI):
            continue
        if unicodedata.category(ch) in _ATTACHED:
            if previous not in (None, _EMOJI) and _has(previous, ch):
                picked.append((ch, previous))
            continue
        as_emoji = ord(ch) >= 0x1F000 or text[i + 1 : i + 2] == _EMOJI_PRESENTATION
        candidates = (_EMOJI, *fonts) if as_emoji else (*fonts, _EMOJI)
        if previous is not None and previous != _EMOJI and not as_emoji and _has(previous, ch):
            font = previous  # spaces and punctuation stay with the run they are in
        else:
            font = next((f for f in candidates if _has(f, ch)), None)
        picked.append((ch, font))
    runs: list[_Run] = []
    i = 0
    while i < len(picked):
        j = i
        while j < len(picked) and picked[j][1] == picked[i][1]:
            j += 1
        chars, font = "".join(ch for ch, _ in picked[i:j]), picked[i][1]
        if font is None:
            chars, font = _stand_in(chars), fonts[0]
        if runs and runs[-1].font == font:
            runs[-1] = _Run(runs[-1].text + chars, font)
        else:
            runs.append(_Run(chars, font))
        i = j
    return tuple(runs)


def _visual(text: str) -> str:
    """Without raqm, Pillow draws characters left to right as stored: put each right-to-left
    stretch in reading order (letters stay unjoined, but readable)."""
    if _shaping() or not any(unicodedata.bidirectional(ch) in _RTL for ch in text):
        return text
    out, stretch = [], []
    for ch in text:
        if unicodedata.bidirectional(ch) in _RTL or (stretch and ch == " "):
            stretch.append(ch)
            continue
        tail = len(stretch) - len("".join(stretch).rstrip(" "))
        out += reversed(stretch[: len(stretch) - tail])
        out += stretch[len(stretch) - tail :]
        stretch = []
        out.append(ch)
    out += reversed("".join(stretch).rstrip(" ")) if stretch else []
    return "".join(out)


def _run_width(run: _Run, size: int) -> float:
    if run.font == _EMOJI:
        return _load_font(_EMOJI, _EMOJI_STRIKE).getlength(run.text) * size / _EMOJI_STRIKE
    return _load_font(run.font, size).getlength(_visual(run.text))


def _width(text: str, size: int, bold: bool = False) -> float:
    return sum(_run_width(run, size) for run in _runs(text, bold))


def _draw_text(
    img: Image.Image, left_middle: tuple[float, float], text: str, size: int, fill, bold: bool = False
) -> None:
    """Draw ``text`` with its left edge and vertical middle at ``left_middle``."""
    x, y = left_middle
    draw = ImageDraw.Draw(img)
    for run in _runs(text, bold):
        width = _run_width(run, size)
        if run.font == _EMOJI:
            font = _load_font(_EMOJI, _EMOJI_STRIKE)
            _, _, right, bottom = font.getbbox(run.text)
            glyphs = Image.new("RGBA", (max(1, right), max(1, bottom)), (0, 0, 0, 0))
            ImageDraw.Draw(glyphs).text((0, 0), run.text, font=font, embedded_color=True)
            h = max(1, round(size * bottom / _EMOJI_STRIKE))
            glyphs = glyphs.resize((max(1, round(width)), h), Image.Resampling.LANCZOS)
            img.paste(glyphs, (round(x), round(y - h / 2)), glyphs)
        else:
            font = _load_font(run.font, size)
            # Left to right overall ("3 · " before an Arabic caption), right to left inside.
            direction = {"direction": "ltr"} if _shaping() else {}
            draw.text((x, y), _visual(run.text), font=font, fill=fill, anchor="lm", **direction)
        x += width


def _fit(text: str, size: int, bold: bool, max_width: float) -> str:
    """The longest prefix of ``text`` (with an ellipsis) that fits ``max_width`` pixels."""
    if _width(text, size, bold) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = text[:mid].rstrip() + "…"
        if _width(candidate, size, bold) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def _wrap(text: str, size: int, max_width: float, max_lines: int) -> list[str]:
    words, lines, line = text.split(" "), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if _width(trial, size) <= max_width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], " ".join(lines[max_lines - 1 :])]
    return [_fit(ln, size, False, max_width) for ln in lines]


def _contrast(color: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = color
    return (20, 20, 20) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _blank_canvas(width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), _BLANK)
    draw = ImageDraw.Draw(img)
    step = max(width, height) // 8  # 64 px on a 512 canvas: the method's shift quantum
    for x in range(step, width, step):
        draw.line([(x, 0), (x, height)], fill=_GRID, width=1)
    for y in range(step, height, step):
        draw.line([(0, y), (width, y)], fill=_GRID, width=1)
    return img


def _base_image(layout: SceneLayout, image: Image.Image | bytes | None) -> Image.Image:
    if image is None:
        return _blank_canvas(layout.width, layout.height)
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    image = image.convert("RGB")
    if image.size != (layout.width, layout.height):
        image = image.resize((layout.width, layout.height), Image.Resampling.LANCZOS)
    return image


def draw_overlay(
    layout: SceneLayout, image: Image.Image | bytes | None = None, *, missing: Collection[int] = ()
) -> bytes:
    """Draw ``layout`` over ``image`` (or a blank canvas) with a legend strip; PNG bytes.

    ``missing``: ids of objects the self-check did not find in their box; their box is crossed
    out and their label says "missing"."""
    base = _base_image(layout, image)
    W, H = base.size
    scale = max(W, H) / 512
    label_size = max(11, round(14 * scale))
    pad = max(2, round(3 * scale))
    outline = max(2, round(3 * scale))

    # Boxes: translucent fills on their own layer, then outlines. Larger boxes first, so a small
    # box inside a large one stays visible on top.
    objects = sorted(layout.objects, key=lambda o: -o.box.area)
    fill_layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    fill_draw = ImageDraw.Draw(fill_layer)
    for obj in objects:
        b = obj.box
        fill_draw.rectangle([b.x, b.y, b.x1 - 1, b.y1 - 1], fill=(*object_color(obj.id), 48))
    canvas = Image.alpha_composite(base.convert("RGBA"), fill_layer)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        b = obj.box
        color = object_color(obj.id)
        # A thin dark line outside the coloured one keeps the outline visible on any background.
        draw.rectangle([b.x, b.y, b.x1 - 1, b.y1 - 1], outline=(0, 0, 0, 160), width=outline + 1)
        draw.rectangle([b.x, b.y, b.x1 - 1, b.y1 - 1], outline=color, width=outline)
        if obj.id in missing:
            for line in ([b.x, b.y, b.x1 - 1, b.y1 - 1], [b.x, b.y1 - 1, b.x1 - 1, b.y]):
                draw.line(line, fill=(0, 0, 0, 160), width=outline + 1)
                draw.line(line, fill=color, width=max(1, outline - 1))

    # Labels: greedy placement in reading order, trying spots around each box's top-left corner.
    placed: list[tuple[float, float, float, float]] = []
    chip_h = label_size + 2 * pad
    for obj in sorted(layout.objects, key=lambda o: (o.box.y, o.box.x, o.id)):
        b = obj.box
        color = object_color(obj.id)
        max_w = max(min(W - 2 * pad, max(b.w, 180 * scale)) - 2 * pad, 40)
        suffix = " · missing" if obj.id in missing else ""  # never cut off: fit the caption only
        suffix_w = _width(suffix, label_size, bold=True) if suffix else 0
        text = _fit(f"{obj.id} · {obj.caption}", label_size, True, max(max_w - suffix_w, 20)) + suffix
        chip_w = _width(text, label_size, bold=True) + 2 * pad
        spots = [
            (b.x, b.y - chip_h),  # above the top-left corner: the preferred spot
            (b.x, b.y),  # inside, along the top edge
            (b.x, b.y1),  # below the box
            (b.x1 - chip_w, b.y - chip_h),
            (b.x1 - chip_w, b.y1 - chip_h),
        ]
        # Then slide down inside the box, row by row, until a free spot appears.
        spots += [(b.x, b.y + k * chip_h) for k in range(1, max(1, b.h // chip_h))]
        chosen = None
        for sx, sy in spots:
            sx = min(max(sx, 0), W - chip_w)
            sy = min(max(sy, 0), H - chip_h)
            rect = (sx, sy, sx + chip_w, sy + chip_h)
            if not any(_overlaps(rect, p) for p in placed):
                chosen = rect
                break
        if chosen is None:
            sx, sy = min(max(b.x, 0), W - chip_w), min(max(b.y, 0), H - chip_h)
            chosen = (sx, sy, sx + chip_w, sy + chip_h)
        placed.append(chosen)
        draw.rectangle(chosen, fill=color, outline=(0, 0, 0), width=1)
        _draw_text(
            canvas, (chosen[0] + pad, chosen[1] + chip_h / 2), text, label_size, _contrast(color), bold=True
        )

    return _to_png(_with_legend(canvas.convert("RGB"), layout, scale))


def _with_legend(img: Image.Image, layout: SceneLayout, scale: float) -> Image.Image:
    W, H = img.size
    size = max(11, round(13 * scale))
    pad = round(8 * scale)
    rows: list[tuple[str, str]] = [("Background", layout.background)]
    if layout.negative:
        rows.append(("Avoid", layout.negative))
    count = len(layout.objects)
    rows.append(("Objects", f"{count} object{'s' if count != 1 else ''}" if count else "none"))
    line_h = round(size * 1.45)
    head_w = max(_width(f"{k}:", size, bold=True) for k, _ in rows) + pad
    laid: list[tuple[str, list[str]]] = []
    for key, value in rows:
        laid.append((key, _wrap(value, size, W - 2 * pad - head_w, 3)))
    strip_h = 2 * pad + line_h * sum(len(lines) for _, lines in laid)
    out = Image.new("RGB", (W, H + strip_h), _LEGEND_BG)
    out.paste(img, (0, 0))
    y = H + pad
    for key, lines in laid:
        _draw_text(out, (pad, y + line_h / 2), f"{key}:", size, _LEGEND_DIM, bold=True)
        for line in lines:
            _draw_text(out, (pad + head_w, y + line_h / 2), line, size, _LEGEND_FG)
            y += line_h
    return out


def _to_png(img: Image.Image) -> bytes:
    # Fast, light compression: a plan picture is on the way to the user (optimize=True took ~13 ms
    # of a 512² picture for a few kB); uploads are fitted under the server's limit anyway.
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
