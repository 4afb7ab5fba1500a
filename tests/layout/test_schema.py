"""The scene-layout model: every validation rule gives a clear error."""

import math

import pytest
from pydantic import ValidationError

from lmd_bot.layout import Box, LayoutLimits, SceneLayout, SceneObject


def obj(i, caption="a cat", box=(10, 10, 100, 100)):
    return {"id": i, "caption": caption, "box": list(box)}


def test_box_accepts_list_and_mapping_and_serializes_as_list():
    assert Box.model_validate([1, 2, 3, 4]) == Box.model_validate({"x": 1, "y": 2, "w": 3, "h": 4})
    assert Box.model_validate([1, 2, 3, 4]).model_dump() == [1, 2, 3, 4]


def test_box_rounds_floats_to_whole_pixels():
    assert Box.model_validate([10.4, 10.6, 99.5, 100.49]).as_list() == [10, 11, 100, 100]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_box_rejects_non_finite_numbers(bad):
    with pytest.raises(ValidationError, match="finite"):
        Box.model_validate([bad, 0, 10, 10])


@pytest.mark.parametrize("box", [[0, 0, 0, 10], [0, 0, 10, -5], [0, 0, -1, -1]])
def test_box_rejects_zero_or_negative_size(box):
    with pytest.raises(ValidationError, match="positive"):
        Box.model_validate(box)


@pytest.mark.parametrize(
    "box", [[1, 2, 3], [1, 2, 3, 4, 5], ["a", 1, 2, 3], [True, 1, 2, 3], [None, 1, 2, 3]]
)
def test_box_rejects_malformed(box):
    with pytest.raises(ValidationError):
        Box.model_validate(box)


def test_box_conversion_to_normalized_xyxy_matches_reference_arithmetic():
    box = Box.model_validate([21, 281, 211, 159])
    x0, y0 = 21 / 512, 281 / 512
    assert box.to_xyxy_norm() == (x0, y0, x0 + 211 / 512, y0 + 159 / 512)
    assert Box.model_validate([0, 0, 256, 128]).to_xyxy_norm(256, 256) == (0.0, 0.0, 1.0, 0.5)


def test_caption_is_cleaned_of_control_and_bidi_characters():
    o = SceneObject.model_validate(obj(1, "  a\tred\u0000 apple\u202e.\n"))
    assert o.caption == "a red apple"
    assert o.word == "apple"


@pytest.mark.parametrize("caption", ["", "   ", "\x00\x01", "...", 5])
def test_caption_empty_or_not_text_is_rejected(caption):
    with pytest.raises(ValidationError):
        SceneObject.model_validate(obj(1, caption))


def test_caption_length_follows_configurable_limit():
    long = "a " + "very " * 40 + "long cat"
    with pytest.raises(ValidationError, match="limit is 120"):
        SceneObject.model_validate(obj(1, long), context={"limits": LayoutLimits()})
    limits = LayoutLimits(max_caption_chars=400)
    assert SceneObject.model_validate(obj(1, long), context={"limits": limits}).caption == long
    # Without limits, a layout our code stored is read back: only the hard ceiling holds.
    assert SceneObject.model_validate(obj(1, long)).caption == long
    with pytest.raises(ValidationError, match="limit is 2000"):
        SceneObject.model_validate(obj(1, "a cat " * 400))


def test_caption_with_text_format_marker_is_rejected():
    with pytest.raises(ValidationError, match="Background prompt:"):
        SceneObject.model_validate(obj(1, "a sign saying Background prompt: hi"))


def test_layout_defaults_and_background_rule():
    layout = SceneLayout.model_validate({"objects": [], "background": "  ", "negative": "None"})
    assert (layout.width, layout.height) == (512, 512)
    assert layout.background == "A realistic scene"
    assert layout.negative == ""


def test_layout_rejects_box_outside_canvas():
    with pytest.raises(ValidationError, match="not inside the 512x512 canvas"):
        SceneLayout.model_validate({"objects": [obj(1, box=(500, 0, 20, 20))]})


def test_layout_rejects_box_covering_whole_canvas():
    with pytest.raises(ValidationError, match="whole canvas"):
        SceneLayout.model_validate({"objects": [obj(1, box=(0, 0, 512, 512))]})


def test_layout_rejects_duplicate_ids():
    with pytest.raises(ValidationError, match="id 1 is used twice"):
        SceneLayout.model_validate({"objects": [obj(1), obj(1, "a dog")]})


def test_layout_object_cap_is_configurable():
    objects = [obj(i + 1) for i in range(5)]
    with pytest.raises(ValidationError, match="5 objects; the limit is 4"):
        SceneLayout.model_validate({"objects": objects}, context={"limits": LayoutLimits(max_objects=4)})
    assert len(SceneLayout.model_validate({"objects": objects}).objects) == 5


def test_layout_canvas_size_must_be_multiple_of_8():
    with pytest.raises(ValidationError):
        SceneLayout(width=500)


def test_layout_json_round_trip_is_exact():
    layout = SceneLayout.model_validate(
        {"objects": [obj(3, "a dog", (1, 2, 30, 40)), obj(7)], "background": "A park", "negative": "people"}
    )
    assert SceneLayout.model_validate_json(layout.model_dump_json()) == layout


def test_sorted_objects_is_by_caption_then_id_and_next_id():
    layout = SceneLayout.model_validate({"objects": [obj(5, "a dog"), obj(2, "a cat"), obj(1, "a dog")]})
    assert [o.id for o in layout.sorted_objects()] == [2, 1, 5]
    assert layout.next_id() == 6
    assert layout.object(2).caption == "a cat"


def test_layout_is_immutable():
    layout = SceneLayout()
    with pytest.raises(ValidationError):
        layout.background = "x"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("a re\u200bd app\u00adle\u2060", "a red apple"),  # zero-width space, soft hyphen, word joiner
        ("\ufeffa cat\u200e", "a cat"),  # byte-order mark, left-to-right mark
        ("an astronaut 👩\u200d🚀", "an astronaut 👩\u200d🚀"),  # the joiner of an emoji sequence stays
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",) * 2,  # Persian spelling keeps its ZWNJ
        ("a \u200dcat\u200d", "a cat"),  # a joiner that joins nothing goes
    ],
)
def test_caption_loses_invisible_format_characters(raw, clean):
    assert SceneObject.model_validate(obj(1, raw)).caption == clean


@pytest.mark.parametrize("caption", ["\u200b", "\u200b\u200d\u2060\u00ad\ufeff", " \u200d "])
def test_caption_of_only_invisible_characters_is_empty(caption):
    with pytest.raises(ValidationError) as err:
        SceneObject.model_validate(obj(1, caption))
    assert "empty" in str(err.value)
