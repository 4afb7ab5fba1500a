"""Aspect ratios and the canvases they give; which instructions ask for another shape."""

import pytest

from lmd_bot.layout.canvas import Aspect, Canvas, canvas_for, fit, requested_aspect


def test_every_aspect_has_sides_in_multiples_of_64_and_its_longer_side_is_the_size():
    for size in (256, 512, 768, 1024):
        for aspect in Aspect:
            canvas = canvas_for(aspect, size)
            assert max(canvas.width, canvas.height) == size
            assert canvas.width % 64 == 0 and canvas.height % 64 == 0
            assert (canvas.width >= canvas.height) == (aspect.ratio >= 1)
    assert canvas_for(Aspect.LANDSCAPE, 512) == Canvas(512, 384)  # exact where 64 allows
    assert canvas_for(Aspect.WIDE, 512) == Canvas(512, 320)  # as near as 64 px steps allow
    assert canvas_for(Aspect.TALL, 768) == Canvas(448, 768)
    assert fit(512, 320, 512) == Canvas(512, 320)  # a planned canvas renders as it is


@pytest.mark.parametrize(
    ("text", "aspect"),
    [
        ("make it wide", Aspect.WIDE),
        ("Make it wider, and add a cat", Aspect.WIDE),
        ("turn it into a portrait", Aspect.PORTRAIT),
        ("change the format to 16:9", Aspect.WIDE),
        ("make the image 9:16", Aspect.TALL),
        ("set the aspect ratio to 3:2", Aspect.PHOTO),
        ("square", Aspect.SQUARE),
        ("4:3", Aspect.LANDSCAPE),
        ("add a wide river", None),
        ("make the cat tall", None),
        ("make it 5:4", None),
        ("move the cup to the right", None),
    ],
)
def test_requested_aspect(text, aspect):
    assert requested_aspect(text) == aspect
