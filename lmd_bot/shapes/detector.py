"""The shapes world's detector: colour segmentation, then shape classification by geometry.

1. Every pixel takes the nearest of the world's reference colours (the six object colours and
   every background colour); pixels nearest an object colour are that colour's foreground. On
   the world's own renders this is exact; on generated images it tolerates the shifts a small
   model makes.
2. Each 4-connected region of one colour, above a minimum area, is an object (objects never
   touch in the world, so one region is one object).
3. Its shape comes from its bounding box: how much of the box it fills (square ~1, circle
   ~0.79, triangle and diamond ~0.5) and, for the last two, how much of it is in the top half
   (a triangle's apex is up: ~0.25; a diamond is symmetric: 0.5).

For the benchmark it answers the reference's queries as OWL-ViT does (docs/method.md, "Image
scoring"): each detection is named by the query it matches, by shape and, when the query names
one, colour ("a photo of a red circle" names red circles "a red circle"; "a photo of a circle"
names every circle "a circle"), boxes ``[x, y, w, h]`` in image pixels, the largest first. A
detection that answers two queries comes back under both names with the same box; the
self-check counts it once (:mod:`lmd_bot.selfcheck.findings`). The benchmark never asks two
queries one detection can answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmd_bot.eval.predicates import NamedBox
from lmd_bot.shapes.world import IMAGE_SIZE, PALETTE, Background, Colour, Shape, background_image

if TYPE_CHECKING:
    from PIL import Image

MIN_AREA = 16  # pixels at 64 px: smaller specks are noise, the smallest object has ~50
_QUERY = re.compile(r"^a photo of (?:an? )?(?:(?P<colour>\w+) )?(?P<shape>\w+)$")


@dataclass(frozen=True)
class Detection:
    colour: Colour
    shape: Shape
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), px
    mask: np.ndarray  # (H, W) bool

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def name(self) -> str:
        article = "an" if self.colour.value[0] in "aeiou" else "a"
        return f"{article} {self.colour.value} {self.shape.value}"

    def box_iou(self, box: tuple[float, float, float, float]) -> float:
        return box_iou(self.box, box)


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_colours() -> tuple[np.ndarray, int]:
    """Object colours first, then every distinct background colour; returns (colours, n_objects)."""
    backgrounds = {tuple(c) for bg in Background for c in background_image(bg, 0).reshape(-1, 3)}
    objects = [PALETTE[c] for c in Colour]
    return np.array(objects + sorted(backgrounds), dtype=np.float32), len(objects)


_REFERENCES, _N_OBJECT_COLOURS = _reference_colours()


def classify_shape(mask: np.ndarray) -> Shape:
    """The shape of one region (its mask cropped or not)."""
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    fill = crop.sum() / (h * w)
    if fill >= 0.86:
        return Shape.SQUARE
    if fill >= 0.66:
        return Shape.CIRCLE
    top = crop[: h // 2].sum() + (crop[h // 2].sum() / 2 if h % 2 else 0)
    return Shape.TRIANGLE if top / crop.sum() < 0.38 else Shape.DIAMOND


def nearest_reference(image: np.ndarray) -> np.ndarray:
    """``(H, W)``: per pixel, the index of the nearest reference colour (object colours first, in
    :class:`Colour` order, then background colours)."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    distance = ((pixels[:, None, :] - _REFERENCES[None]) ** 2).sum(-1)
    return distance.argmin(1).reshape(image.shape[:2])


def colour_share(image: np.ndarray, box: tuple[int, int, int, int], colour: Colour) -> float:
    """The fraction of the pixels in ``box`` (x0, y0, x1, y1) that are nearest ``colour``: a
    coarse grounding measure that needs no clean shape."""
    x0, y0, x1, y1 = box
    region = nearest_reference(image[y0:y1, x0:x1])
    return float((region == list(Colour).index(colour)).mean())


def detect(image: np.ndarray) -> list[Detection]:
    """Objects in an ``(H, W, 3)`` uint8 RGB image, largest first."""
    from scipy import ndimage

    nearest = nearest_reference(image)
    min_area = MIN_AREA * image.shape[0] * image.shape[1] / IMAGE_SIZE**2
    found: list[Detection] = []
    for index, colour in enumerate(Colour):
        labels, n = ndimage.label(nearest == index)
        for region in range(1, n + 1):
            mask = labels == region
            if mask.sum() < min_area:
                continue
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            found.append(Detection(colour, classify_shape(mask), box, mask))
    found.sort(key=lambda d: -d.area)
    return found


class ShapesDetector:
    """The benchmark's detector interface (``detect(image, queries) -> list[NamedBox]``)."""

    name = "shapes"

    def detect(self, image: Image.Image, queries: list[str]) -> list[NamedBox]:
        detections = detect(np.asarray(image.convert("RGB")))
        boxes: list[NamedBox] = []
        for query in queries:
            match = _QUERY.match(query)
            if match is None:
                raise ValueError(f"the shapes detector cannot answer the query {query!r}")
            colour, shape = match["colour"], match["shape"]
            phrase = query.removeprefix("a photo of ")
            for d in detections:
                if d.shape.value == shape and (colour is None or d.colour.value == colour):
                    x0, y0, x1, y1 = d.box
                    boxes.append(NamedBox(name=phrase, box=(x0, y0, x1 - x0, y1 - y0), score=float(d.area)))
        boxes.sort(key=lambda b: -(b.score or 0))
        return boxes
