"""Canvas shapes: the aspect ratios users pick (``/imagine … aspect:``, "make it wide") and the
canvas each gives.

Sides are multiples of 64 (SD's latents are 1/8 of the image and its UNet halves them three
times), so an aspect is met as closely as those sides allow (16:9 at 512 px is 512x320). A scene
is planned on its aspect's canvas in the planner's 512 px frame and rendered at that shape with
its longer side ``diffusion.size`` (:func:`fit`): at the default size, the very same canvas.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum


class Aspect(StrEnum):
    SQUARE = "1:1"
    LANDSCAPE = "4:3"
    PORTRAIT = "3:4"
    WIDE = "16:9"
    TALL = "9:16"
    PHOTO = "3:2"
    PHOTO_PORTRAIT = "2:3"

    @property
    def ratio(self) -> float:
        """Width over height."""
        w, h = self.value.split(":")
        return int(w) / int(h)


@dataclass(frozen=True)
class Canvas:
    """A layout's canvas in pixels."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


SQUARE_512 = Canvas(512, 512)


def _side(pixels: float) -> int:
    return max(64, math.floor(pixels / 64 + 0.5) * 64)


def fit(width: float, height: float, size: int) -> Canvas:
    """A ``width`` x ``height`` shape scaled to longer side ``size``, sides rounded to multiples
    of 64 (``size`` is one: a canvas already of that size stays as it is)."""
    scale = size / max(width, height)
    return Canvas(_side(width * scale), _side(height * scale))


def canvas_for(aspect: Aspect, size: int) -> Canvas:
    """The canvas of ``aspect`` with its longer side ``size``, sides rounded to multiples of 64."""
    return fit(aspect.ratio, 1.0, size)


# "make it wide", "turn it into a portrait", "change the format to 16:9", or just "square".
_WORDS = {
    "wide": Aspect.WIDE,
    "wider": Aspect.WIDE,
    "widescreen": Aspect.WIDE,
    "landscape": Aspect.LANDSCAPE,
    "horizontal": Aspect.LANDSCAPE,
    "tall": Aspect.TALL,
    "taller": Aspect.TALL,
    "vertical": Aspect.TALL,
    "portrait": Aspect.PORTRAIT,
    "square": Aspect.SQUARE,
}
_NAME = "|".join([*_WORDS, r"\d{1,2}\s*[:x×/]\s*\d{1,2}"])
_ASK = re.compile(
    rf"(?:^|\b(?:make|turn|change|set|switch|crop|render|draw)\s+(?:it|this|the\s+(?:image|picture|canvas|"
    rf"format|scene|aspect(?:\s+ratio)?))\s+(?:in|into|to|as)?\s*(?:an?\s+)?(?:format\s+)?)"
    rf"(?P<name>{_NAME})(?:\s+(?:format|aspect|ratio|image|picture))?\s*[.!]*(?:$|\s+and\b|,)",
    re.IGNORECASE,
)
_RATIO = re.compile(r"\b(\d{1,2})\s*[:x×/]\s*(\d{1,2})\b")


def requested_aspect(instruction: str) -> Aspect | None:
    """The aspect an instruction asks the canvas to take ("make it wide", "16:9"), or None.

    Only a request about the whole picture counts: "a wide river" is about the river. A ratio
    that is no :class:`Aspect` (5:4) is None too; the planner then answers in words.
    """
    text = " ".join(instruction.split())
    match = _ASK.search(text)
    if match is None:
        return None
    name = match["name"].lower()
    if name in _WORDS:
        return _WORDS[name]
    ratio = _RATIO.fullmatch(name)
    if ratio is None:
        return None
    try:
        return Aspect(f"{int(ratio[1])}:{int(ratio[2])}")
    except ValueError:
        return None
