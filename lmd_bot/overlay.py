"""Layout overlays: the scene's boxes drawn over an image or over a blank canvas (the plan).

Each object gets the colour of its id (stable across rounds), an outline with a translucent fill,
and a label chip ("2 · a red apple") placed where it collides with no other label. Below the
picture a legend strip gives the background and the negative prompt. The output is PNG bytes.

Fonts ship with the package (``assets/fonts``): DejaVu Sans for Latin, Greek and Cyrillic,
WenQuanYi Micro Hei for labels with Chinese, Japanese, Korean or other characters. Emoji and
scripts neither covers draw as boxes; the exact text is always in the message beside the picture.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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


def _needs_fallback(text: str) -> bool:
    # DejaVu Sans covers Latin, Greek, Cyrillic and Armenian (up to U+058F) and punctuation.
    return any(ord(ch) > 0x058F and not 0x2000 <= ord(ch) <= 0x206F for ch in text)


@cache
def _load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def _font(text: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    if _needs_fallback(text):
        return _load_font("wqy-microhei.ttc", size)
    return _load_font("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)


def _text_width(text: str, font: ImageFont.FreeTypeFont) -> float:
    return font.getlength(text)


def _fit(text: str, font_for, max_width: float) -> str:
    """The longest prefix of ``text`` (with an ellipsis) that fits ``max_width`` pixels."""
    if _text_width(text, font_for(text)) <= max_width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = text[:mid].rstrip() + "…"
        if _text_width(candidate, font_for(candidate)) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float, max_lines: int) -> list[str]:
    words, lines, line = text.split(" "), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if _text_width(trial, font) <= max_width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], " ".join(lines[max_lines - 1 :])]
    return [_fit(ln, lambda _t: font, max_width) for ln in lines]


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


def draw_overlay(layout: SceneLayout, image: Image.Image | bytes | None = None) -> bytes:
    """Draw ``layout`` over ``image`` (or a blank canvas) with a legend strip; PNG bytes."""
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

    # Labels: greedy placement in reading order, trying spots around each box's top-left corner.
    placed: list[tuple[float, float, float, float]] = []
    chip_h = label_size + 2 * pad
    for obj in sorted(layout.objects, key=lambda o: (o.box.y, o.box.x, o.id)):
        b = obj.box
        color = object_color(obj.id)
        max_w = max(min(W - 2 * pad, max(b.w, 180 * scale)) - 2 * pad, 40)
        text = _fit(f"{obj.id} · {obj.caption}", lambda t: _font(t, label_size, True), max_w)
        font = _font(text, label_size, True)
        chip_w = _text_width(text, font) + 2 * pad
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
        draw.text(
            (chosen[0] + pad, chosen[1] + chip_h / 2), text, font=font, fill=_contrast(color), anchor="lm"
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
    head_font = _font("Background", size, True)
    head_w = max(_text_width(f"{k}:", head_font) for k, _ in rows) + pad
    laid: list[tuple[str, list[str]]] = []
    for key, value in rows:
        font = _font(value, size)
        laid.append((key, _wrap(value, font, W - 2 * pad - head_w, 3)))
    strip_h = 2 * pad + line_h * sum(len(lines) for _, lines in laid)
    out = Image.new("RGB", (W, H + strip_h), _LEGEND_BG)
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    y = H + pad
    for key, lines in laid:
        draw.text((pad, y), f"{key}:", font=head_font, fill=_LEGEND_DIM)
        for line in lines:
            draw.text((pad + head_w, y), line, font=_font(line, size), fill=_LEGEND_FG)
            y += line_h
    return out


def _to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
