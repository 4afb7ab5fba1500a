"""Layout overlays: right size, object colours where the boxes are, stable colours, legible labels."""

import io

import numpy as np
import pytest
from PIL import Image

from lmd_bot import overlay
from lmd_bot.layout import SceneLayout
from lmd_bot.overlay import PALETTE, _has, _runs, draw_overlay, object_color


def layout(objects, **kw):
    return SceneLayout.model_validate({"objects": objects, **kw})


def open_png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_plan_picture_has_canvas_plus_legend_and_box_outline_in_object_colour():
    lay = layout([{"id": 3, "caption": "a cat", "box": [100, 200, 200, 150]}], background="A park")
    img = open_png(draw_overlay(lay))
    assert img.width == 512 and img.height > 512  # the legend strip sits below the canvas
    # a point on the right edge of the box, away from the label, has the object's colour
    assert img.getpixel((100 + 200 - 2, 200 + 100)) == object_color(3)
    # far from any box the blank canvas shows
    assert img.getpixel((20, 480)) == (244, 244, 246)


def test_colours_are_stable_per_id_and_distinct_for_16():
    assert object_color(5) == PALETTE[4] == object_color(5 + 16)
    assert len({object_color(i) for i in range(1, 17)}) == 16


def test_same_object_same_colour_across_rounds_even_when_others_change():
    round1 = layout(
        [
            {"id": 1, "caption": "a cup", "box": [10, 300, 80, 80]},
            {"id": 2, "caption": "a dog", "box": [200, 200, 200, 200]},
        ]
    )
    round2 = layout(
        [
            {"id": 2, "caption": "a dog", "box": [20, 20, 200, 200]},
            {"id": 4, "caption": "a bird", "box": [300, 300, 100, 100]},
        ]
    )
    a, b = open_png(draw_overlay(round1)), open_png(draw_overlay(round2))
    assert a.getpixel((200 + 198, 300)) == b.getpixel((20 + 198, 120)) == object_color(2)


def test_draws_over_an_image_of_another_size():
    lay = layout([{"id": 1, "caption": "a cat", "box": [0, 256, 256, 256]}])
    photo = Image.new("RGB", (1024, 1024), (0, 0, 0))
    img = open_png(draw_overlay(lay, photo))
    assert img.width == 512
    assert img.getpixel((400, 100)) == (0, 0, 0)  # the photo, resized, outside the box
    fill = img.getpixel((128, 400))  # translucent fill over black: a dark tint of the colour
    assert fill != (0, 0, 0) and all(c < 80 for c in fill)


def test_png_bytes_input_and_many_long_non_latin_labels(tmp_path):
    objects = [
        {
            "id": i + 1,
            "caption": f"{name} número {i} with a very long description of everything",
            "box": [i * 20, i * 20, 200, 120],
        }
        for i, name in enumerate(["一只猫", "강아지", "кошка", "a dog"] * 4)
    ]
    lay = layout(objects, negative="people, text, watermark " * 5)
    buf = io.BytesIO()
    Image.new("RGB", (512, 512), (255, 255, 255)).save(buf, format="PNG")
    img = open_png(draw_overlay(lay, buf.getvalue()))
    assert img.width == 512 and img.height > 512 + 40


def chip(img: Image.Image, box_x: int, box_y: int, height: int = 20) -> Image.Image:
    """The label chip above a box's top-left corner (its preferred spot)."""
    return img.crop((box_x, box_y - height, min(img.width, box_x + 220), box_y))


def test_emoji_in_a_caption_draw_in_colour_not_as_boxes():
    # Object 3's chip is blue; a red apple emoji on it leaves strongly red pixels.
    lay = layout([{"id": 3, "caption": "an apple 🍎", "box": [100, 200, 200, 150]}])
    pixels = np.asarray(chip(open_png(draw_overlay(lay)), 100, 200)).reshape(-1, 3).astype(int)
    assert object_color(3) == (0, 130, 200)
    r, g, b = pixels.T
    assert ((r > 180) & (g < 90) & (b < 90)).sum() >= 10


@pytest.mark.parametrize(
    "caption",
    [
        "قطة حمراء على الأريكة",  # Arabic
        "گربه‌ی نارنجی",  # Persian, with its zero-width non-joiner
        "חתול אדום על הספה",  # Hebrew
        "一只红色的猫",  # Chinese
        "a cat 🐱 and an astronaut 👩‍🚀 ❤️",
        "una manzana roja · красное яблоко",
    ],
)
def test_every_character_of_a_label_is_drawn_with_a_font_that_has_it(caption):
    label = f"7 · {caption}"
    runs = _runs(label, True)
    drawn = "".join(run.text for run in runs)
    assert drawn == "".join(ch for ch in label if ord(ch) not in (0x200D, 0xFE0F))
    for run in runs:
        missing = [ch for ch in run.text if not _has(run.font, ch)]
        assert missing == [], (run.font, missing)


def test_what_no_font_has_gets_a_readable_stand_in():
    assert "".join(r.text for r in _runs("5 · बिल्ली on a mat", False)) == "5 · [Devanagari text] on a mat"


def test_arabic_and_hebrew_are_shaped_and_read_right_to_left_after_the_id():
    # With raqm (Pillow's wheels): drawn as one run, laid out left to right overall.
    box = [100, 200, 200, 150]
    arabic = chip(open_png(draw_overlay(layout([{"id": 2, "caption": "قطة", "box": box}]))), 100, 200)
    latin = chip(open_png(draw_overlay(layout([{"id": 2, "caption": "x", "box": box}]))), 100, 200)
    # the id and dot come first, at the left, exactly as for a Latin caption
    assert arabic.crop((0, 0, 20, 20)).tobytes() == latin.crop((0, 0, 20, 20)).tobytes()
    # joined letters (initial, medial, final forms) are narrower than the same letters alone
    assert overlay._width("قطة", 14) < sum(overlay._width(ch, 14) for ch in "قطة") - 3


def test_without_raqm_right_to_left_words_are_still_in_reading_order(monkeypatch):
    monkeypatch.setattr(overlay, "_shaping", lambda: False)
    assert overlay._visual("3 · אב גד!") == "3 · דג בא!"
    assert overlay._visual("a cat") == "a cat"
