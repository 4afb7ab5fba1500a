"""Documented repairs of untrusted layouts (the reference's filter_boxes, section 2.4)."""

import math

import pytest

from lmd_bot.layout import LayoutLimits, RawObject, repair_layout


def raw(caption, box, id=None):
    return RawObject(caption=caption, box=box, id=id)


def test_valid_boxes_pass_unchanged_without_notes():
    result = repair_layout([raw("a cat", [10, 20, 100, 200]), raw("a dog", [200, 20, 100, 200])], "A park")
    assert not result.changed
    assert [o.box.as_list() for o in result.layout.objects] == [[10, 20, 100, 200], [200, 20, 100, 200]]
    assert [o.id for o in result.layout.objects] == [1, 2]


def test_float_boxes_are_rounded():
    result = repair_layout([raw("a cat", [10.6, 20.2, 100.6, 99.5])])
    # halves round to even, as everywhere else
    assert result.layout.objects[0].box.as_list() == [11, 20, 101, 100]


@pytest.mark.parametrize(
    ("box", "why"),
    [
        ([0, 0, 0, 10], "no area"),
        ([0, 0, 10, -1], "no area"),
        ([0, 0, 512, 512], "whole canvas"),
        ([513, 0, 10, 10], "whole canvas or starts outside"),
        ([0, 600, 10, 10], "whole canvas or starts outside"),
        ([math.nan, 0, 10, 10], "not four finite numbers"),
        ([0, 0, math.inf, 10], "not four finite numbers"),
        ([1, 2, 3], "not four finite numbers"),
        ("nope", "not four finite numbers"),
    ],
)
def test_bad_boxes_are_dropped_with_a_note(box, why):
    result = repair_layout([raw("a bad one", box), raw("a cat", [10, 10, 50, 50])])
    assert [o.caption for o in result.layout.objects] == ["a cat"]
    assert any(why in n and "a bad one" in n for n in result.notes), result.notes


def test_out_of_bounds_rescales_all_boxes_like_the_reference():
    # span x: -50..250 (300), span y: 0..300 (300) -> scale min(512/300, 512/300, 3)
    result = repair_layout([raw("a cat", [-50, 0, 100, 100]), raw("a dog", [150, 200, 100, 100])])
    s = 512 / 300
    assert "rescaled" in result.notes[-1]
    cat, dog = result.layout.objects
    assert cat.box.as_list() == [0, 0, round(100 * s), round(100 * s)]
    assert dog.box.as_list() == [round(200 * s), round(200 * s), round(100 * s), round(100 * s)]
    for o in result.layout.objects:
        assert o.box.inside(512, 512)


def test_rescale_enlarges_at_most_three_times_and_shifts_into_canvas():
    result = repair_layout([raw("a cat", [-10, 500, 20, 20])])
    box = result.layout.objects[0].box
    assert (box.w, box.h) == (60, 60)
    assert box.inside(512, 512) and box.y1 == 512


def test_rescale_that_fills_the_canvas_drops_the_background_box():
    result = repair_layout([raw("a dog", [-50, 0, 300, 300])])
    assert result.layout.objects == ()
    assert any("covers the whole canvas" in n for n in result.notes)


def test_captions_are_cleaned_and_empty_ones_dropped():
    result = repair_layout(
        [raw("a\x00 cat.", [0, 0, 10, 10]), raw("  \n", [0, 0, 10, 10]), raw(None, [0, 0, 10, 10])]
    )
    assert [o.caption for o in result.layout.objects] == ["a cat"]
    assert len(result.notes) == 2


def test_overlong_caption_is_shortened_at_a_word_boundary():
    result = repair_layout([raw("a " + "very " * 50 + "big cat", [0, 0, 10, 10])], limits=LayoutLimits())
    caption = result.layout.objects[0].caption
    assert len(caption) <= 120 and caption.endswith("very")
    assert "shortened" in result.notes[0]


def test_object_cap_keeps_the_first_and_says_so():
    objects = [raw(f"cat {i}", [i, i, 10, 10]) for i in range(500)]
    result = repair_layout(objects, limits=LayoutLimits(max_objects=16))
    assert [o.caption for o in result.layout.objects] == [f"cat {i}" for i in range(16)]
    assert "kept the first 16 of 500" in result.notes[0]


def test_ids_are_kept_when_valid_and_replaced_when_not():
    result = repair_layout(
        [
            raw("a", [0, 0, 5, 5], 7),
            raw("b", [0, 0, 5, 5], 7),
            raw("c", [0, 0, 5, 5], "x"),
            raw("d", [0, 0, 5, 5], 2),
        ]
    )
    assert [o.id for o in result.layout.objects] == [7, 8, 9, 2]


def test_text_format_markers_in_captions_are_defused():
    result = repair_layout([raw("a sign: Negative prompt: x", [0, 0, 5, 5])], "bg Background prompt: y")
    assert result.layout.objects[0].caption == "a sign: Negative prompt x"
    assert result.layout.background == "bg Background prompt y"


def test_prompts_are_cleaned_and_shortened():
    result = repair_layout([], "  A   park\x00 ", "x" * 1000)
    assert result.layout.background == "A park"
    assert len(result.layout.negative) == 400
    assert any("negative prompt" in n for n in result.notes)
