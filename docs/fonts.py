"""Rebuild the overlay's colour-emoji font and the fonts' coverage table (``lmd_bot/assets/fonts``).

::

    apt-get download fonts-noto-color-emoji && dpkg-deb -x fonts-noto-color-emoji_*.deb noto
    pip install fonttools   # only for this script; lmd-bot does not need it
    .venv/bin/python docs/fonts.py noto/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf

Noto Color Emoji is 11 MB: 3,968 colour bitmaps of 136 × 128 pixels, most of them for skin-tone
and family sequences. The overlay draws labels 11 to 28 pixels high, so this keeps the glyphs that
single code points reach (sequences fall back to their parts: 👩‍🚀 draws as 👩🚀), scales each
bitmap to a 32-pixel strike and stores it with a 64-colour palette: about 1 MB.

It also writes ``coverage.json``: for each font the ranges of code points it has a glyph for, so
the overlay picks a font per character without reading font tables at run time.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont
from PIL import Image

FONTS = Path(__file__).resolve().parents[1] / "lmd_bot" / "assets" / "fonts"
EMOJI_OUT = FONTS / "NotoColorEmoji-32.ttf"
STRIKE_PPEM = 32


def _small_png(data: bytes, scale: float) -> tuple[bytes, int, int]:
    img = Image.open(io.BytesIO(data)).convert("RGBA")
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    small = img.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), w, h


def build_emoji(source: Path) -> None:
    font = TTFont(source)
    options = subset.Options()
    options.layout_features = []  # no sequences: their parts draw instead
    options.drop_tables += ["GSUB", "vhea", "vmtx"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=list(font.getBestCmap()))
    subsetter.subset(font)
    strike = font["CBLC"].strikes[0].bitmapSizeTable
    scale = STRIKE_PPEM / strike.ppemX
    for glyphs in font["CBDT"].strikeData:
        for glyph in glyphs.values():
            glyph.decompile()
            m = glyph.metrics
            glyph.imageData, m.width, m.height = _small_png(glyph.imageData, scale)
            m.BearingX, m.BearingY = round(m.BearingX * scale), round(m.BearingY * scale)
            m.Advance = round(m.Advance * scale)
    strike.ppemX = strike.ppemY = STRIKE_PPEM
    for line in (strike.hori, strike.vert):
        for name in ("ascender", "descender", "widthMax", "maxBeforeBL", "minAfterBL"):
            setattr(line, name, round(getattr(line, name) * scale))
    font.save(EMOJI_OUT)


def _ranges(codes: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for code in sorted(codes):
        if out and code == out[-1][1] + 1:
            out[-1][1] = code
        else:
            out.append([code, code])
    return out


def write_coverage() -> None:
    coverage = {}
    for path in sorted(FONTS.glob("*.tt[fc]")):
        font = TTFont(path, fontNumber=0)
        coverage[path.name] = _ranges(list(font.getBestCmap()))
    (FONTS / "coverage.json").write_text(json.dumps(coverage, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    build_emoji(Path(sys.argv[1]))
    write_coverage()
    print(f"wrote {EMOJI_OUT} ({EMOJI_OUT.stat().st_size:,} bytes) and coverage.json")  # noqa: T201
