"""The shapes world: seeded scenes of flat coloured shapes on named backgrounds (docs/shapes.md).

A scene is 0–5 objects (a shape in a colour at a size, never overlapping) on one of a few
backgrounds, drawn at :data:`IMAGE_SIZE` px with hard edges, so every object's mask is exact and
its colour is one palette entry. Its caption names what is there and never where:

- the product's own prompt form, ``"{background} with {phrase}, {phrase}"`` (what
  :func:`lmd_bot.diffusion.spec.build_spec` writes), or a freer one, ``"{phrase} and {phrase} on
  {background}"``;
- identical objects merge into one phrase with a number word ("two red circles").

Counts above two of one kind are rare and positions are never said: exactly the weaknesses plain
SD has, so ``sd`` is honestly bad at counting and spatial prompts here while LMD's layouts are not.
Everything is drawn from a ``numpy`` generator, so a seed fixes a scene on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

IMAGE_SIZE = 64
MAX_OBJECTS = 5
MIN_SIZE, MAX_SIZE = 10, 28  # object bounding-box side, px
SMALL_MAX, BIG_MIN = 13, 23  # sizes a caption may call "small" / "big"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")


class Shape(StrEnum):
    CIRCLE = "circle"
    SQUARE = "square"
    TRIANGLE = "triangle"
    DIAMOND = "diamond"

    @property
    def plural(self) -> str:
        return f"{self.value}s"


class Colour(StrEnum):
    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"
    GREEN = "green"
    BLUE = "blue"
    PURPLE = "purple"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return PALETTE[self]


# Far from each other and from every background colour, so that colour segmentation is exact.
PALETTE: dict[Colour, tuple[int, int, int]] = {
    Colour.RED: (220, 30, 30),
    Colour.ORANGE: (245, 140, 20),
    Colour.YELLOW: (240, 220, 30),
    Colour.GREEN: (30, 170, 60),
    Colour.BLUE: (40, 80, 220),
    Colour.PURPLE: (140, 50, 190),
}


class Background(StrEnum):
    WHITE_WALL = "a white wall"
    GRAY_WALL = "a gray wall"
    STRIPED_WALL = "a striped wall"
    CHECKERED_FLOOR = "a checkered floor"
    SNOWY_FIELD = "a snowy field"
    NIGHT_SKY = "a night sky"


class Size(StrEnum):
    SMALL = "small"
    MEDIUM = "medium"
    BIG = "big"


@dataclass(frozen=True)
class ShapeObject:
    shape: Shape
    colour: Colour
    x0: int  # bounding box, px, [x0, x1) x [y0, y1)
    y0: int
    side: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    @property
    def nbox(self) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.box
        return x0 / IMAGE_SIZE, y0 / IMAGE_SIZE, x1 / IMAGE_SIZE, y1 / IMAGE_SIZE

    @property
    def size(self) -> Size:
        return Size.SMALL if self.side <= SMALL_MAX else Size.BIG if self.side >= BIG_MIN else Size.MEDIUM

    def caption(self, *, with_size: bool = False) -> str:
        """ "a red circle", "an orange square", "a small blue diamond"."""
        words = f"{self.size.value} {self.colour.value}" if with_size else self.colour.value
        article = "an" if words[0] in "aeiou" else "a"
        return f"{article} {words} {self.shape.value}"


@dataclass(frozen=True)
class Phrase:
    """One phrase of a caption, its character span in the caption and the objects it names."""

    text: str
    start: int
    end: int
    objects: tuple[int, ...]  # indices into Scene.objects


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[ShapeObject, ...]
    caption: str
    phrases: tuple[Phrase, ...]
    seed: int


def shape_mask(shape: Shape, x0: float, y0: float, w: float, h: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean ``(size, size)`` mask of ``shape`` filling the box ``(x0, y0, w, h)`` (px), tested at
    pixel centres."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = (xs - x0) / w  # 0..1 across the box
    v = (ys - y0) / h
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if shape is Shape.SQUARE:
        return inside
    if shape is Shape.CIRCLE:
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if shape is Shape.TRIANGLE:  # apex at the top, base along the bottom
        return inside & (np.abs(u - 0.5) <= 0.5 * v)
    return np.abs(u - 0.5) + np.abs(v - 0.5) <= 0.5  # diamond


def object_mask(obj: ShapeObject, size: int = IMAGE_SIZE) -> np.ndarray:
    scale = size / IMAGE_SIZE
    return shape_mask(obj.shape, obj.x0 * scale, obj.y0 * scale, obj.side * scale, obj.side * scale, size)


def background_image(background: Background, seed: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """``(size, size, 3)`` uint8. Patterns scale with ``size``; the night sky's stars come from
    ``seed``."""
    img = np.zeros((size, size, 3), np.uint8)
    ys, xs = np.mgrid[0:size, 0:size] * IMAGE_SIZE // size
    if background is Background.WHITE_WALL:
        img[:] = (236, 236, 232)
    elif background is Background.GRAY_WALL:
        img[:] = (128, 128, 128)
    elif background is Background.STRIPED_WALL:
        img[:] = (224, 224, 224)
        img[(xs // 4) % 2 == 1] = (168, 168, 176)
    elif background is Background.CHECKERED_FLOOR:
        img[:] = (196, 190, 180)
        img[((xs // 8) + (ys // 8)) % 2 == 1] = (96, 92, 88)
    elif background is Background.SNOWY_FIELD:
        img[:] = (246, 246, 250)
        img[ys < IMAGE_SIZE * 2 // 5] = (190, 210, 230)
    else:  # night sky with a few stars
        img[:] = (14, 18, 48)
        rng = np.random.default_rng(seed)
        for x, y in rng.integers(0, IMAGE_SIZE, size=(12, 2)):
            img[(xs == x) & (ys == y)] = (250, 250, 220)
    return img


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene's image, ``(size, size, 3)`` uint8."""
    img = background_image(scene.background, scene.seed, size)
    for obj in scene.objects:
        img[object_mask(obj, size)] = obj.colour.rgb
    return img


def masks(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """``(n_objects, size, size)`` bool: each object's exact mask."""
    return (
        np.stack([object_mask(obj, size) for obj in scene.objects])
        if scene.objects
        else np.zeros((0, size, size), bool)
    )


def _phrase(obj: ShapeObject, count: int, *, with_size: bool, with_colour: bool) -> str:
    words = [obj.size.value] if with_size and obj.size is not Size.MEDIUM else []
    words += [obj.colour.value] if with_colour else []
    if count == 1:
        words.append(obj.shape.value)
        text = " ".join(words)
        return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"
    return " ".join([NUMBER_WORDS[count], *words, obj.shape.plural])


def caption_scene(
    background: Background, objects: tuple[ShapeObject, ...], rng: np.random.Generator
) -> tuple[str, tuple[Phrase, ...]]:
    """A caption that says what is there, never where (see the module docstring).

    A quarter of captions give sizes of small and big objects ("a small red circle"); about one
    in seven leaves colours out ("two circles and a square"), as prompts about counts and places
    often do.
    """
    with_size = bool(rng.random() < 0.25)
    with_colour = bool(rng.random() >= 0.15)
    groups: dict[tuple[str, str, str], list[int]] = {}
    for index, obj in enumerate(objects):
        key = (
            obj.colour.value if with_colour else "",
            obj.shape.value,
            obj.size.value if with_size else "",
        )
        groups.setdefault(key, []).append(index)
    texts = [
        (_phrase(objects[ids[0]], len(ids), with_size=with_size, with_colour=with_colour), ids)
        for ids in groups.values()
    ]
    product_form = rng.random() < 0.6
    if product_form:
        texts.sort(key=lambda item: item[0])  # build_spec orders phrases by caption
    else:
        texts = [texts[i] for i in rng.permutation(len(texts))]
    if not texts:
        return background.value, ()
    phrases: list[Phrase] = []
    if product_form:
        caption = f"{background.value} with "
        for index, (text, ids) in enumerate(texts):
            if index:
                caption += ", "
            phrases.append(Phrase(text, len(caption), len(caption) + len(text), tuple(ids)))
            caption += text
        return caption, tuple(phrases)
    caption = ""
    for index, (text, ids) in enumerate(texts):
        if index:
            caption += " and " if index == len(texts) - 1 else ", "
        phrases.append(Phrase(text, len(caption), len(caption) + len(text), tuple(ids)))
        caption += text
    return f"{caption} on {background.value}", tuple(phrases)


def _place(
    rng: np.random.Generator, side: int, taken: list[tuple[int, int, int, int]]
) -> tuple[int, int] | None:
    for _ in range(50):
        x0, y0 = (int(v) for v in rng.integers(0, IMAGE_SIZE - side + 1, size=2))
        box = (x0, y0, x0 + side, y0 + side)
        # One pixel of air between boxes: masks never touch, segmentation separates them.
        if all(box[0] > t[2] or t[0] > box[2] or box[1] > t[3] or t[1] > box[3] for t in taken):
            return x0, y0
    return None


# How many objects a training scene has: mostly one or two, counts above two rare.
COUNT_WEIGHTS = (0.06, 0.34, 0.36, 0.12, 0.07, 0.05)


def sample_scene(seed: int) -> Scene:
    """The scene of ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    background = list(Background)[int(rng.integers(len(Background)))]
    n = int(rng.choice(len(COUNT_WEIGHTS), p=COUNT_WEIGHTS))
    objects: list[ShapeObject] = []
    taken: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        side = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
        if objects and rng.random() < 0.2:  # a repeat of an earlier object's kind: "two red circles"
            twin = objects[int(rng.integers(len(objects)))]
            shape, colour = twin.shape, twin.colour
        else:
            shape = list(Shape)[int(rng.integers(len(Shape)))]
            colour = list(Colour)[int(rng.integers(len(Colour)))]
        spot = _place(rng, side, taken)
        if spot is None:
            continue
        obj = ShapeObject(shape, colour, spot[0], spot[1], side)
        objects.append(obj)
        taken.append(obj.box)
    caption, phrases = caption_scene(background, tuple(objects), rng)
    return Scene(background, tuple(objects), caption, phrases, seed)
