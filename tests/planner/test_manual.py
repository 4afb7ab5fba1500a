"""A layout the user wrote, read like a planner answer: ids settled, boxes repaired with notes."""

import json

import pytest

from lmd_bot.errors import LayoutError
from lmd_bot.layout.canvas import Canvas
from lmd_bot.layout.lmd_text import format_lmd_text
from lmd_bot.layout.schema import LayoutLimits, SceneLayout
from lmd_bot.planner.manual import EDIT_BOX_CHARS, edit_box_text, editable_json, read_user_layout
from lmd_bot.testing import layout_of

BEFORE = layout_of(
    [
        {"id": 1, "caption": "a red apple", "box": [16, 200, 100, 100]},
        {"id": 4, "caption": "a blue cup", "box": [300, 180, 120, 140]},
    ],
    background="a wooden table",
    negative="people",
)


def test_the_editable_json_reads_back_unchanged_with_no_notes():
    text = editable_json(BEFORE)
    assert len(text.splitlines()) == 10  # braces, objects list (one object a line), four fields
    read = read_user_layout(text, BEFORE)
    assert read.layout == BEFORE and read.notes == []
    fenced = read_user_layout(f"```json\n{text}\n```", BEFORE)  # copied from the Layout message
    assert fenced.layout == BEFORE


def test_an_edit_keeps_ids_and_a_bad_box_is_repaired_with_a_note():
    text = editable_json(BEFORE).replace("[300, 180, 120, 140]", "[360, 180, 120, 140]")
    text = text.replace('"a blue cup"', '"a green cup"').replace(
        '"objects": [\n',
        '"objects": [\n    {"id": 0, "caption": "a cat", "box": [40, 40, 0, 90]},\n'
        '    {"caption": "a dog.", "box": {"x": 200, "y": 300, "w": 100, "h": 100}},\n',
    )
    read = read_user_layout(text, BEFORE, used_ids={1, 4, 5})
    by_caption = {o.caption: o for o in read.layout.objects}
    assert set(by_caption) == {"a red apple", "a green cup", "a dog"}
    assert by_caption["a red apple"].id == 1 and by_caption["a green cup"].id == 4
    assert by_caption["a green cup"].box.as_list() == [360, 180, 120, 140]
    assert by_caption["a dog"].id > 5  # new: after every id the scene used
    assert any("'a cat'" in n and "no area" in n for n in read.notes)


def test_lmd_text_has_no_ids_so_the_evidence_settles_them():
    text = format_lmd_text(BEFORE).replace("[300, 180, 120, 140]", "[310, 190, 120, 140]")
    read = read_user_layout(text, BEFORE)
    assert [(o.id, o.caption) for o in read.layout.objects] == [(1, "a red apple"), (4, "a blue cup")]
    assert read.layout.negative == "people"


def test_a_box_off_the_canvas_rescales_the_layout_as_the_reference_does():
    text = editable_json(BEFORE).replace("[300, 180, 120, 140]", "[450, 180, 120, 140]")
    read = read_user_layout(text, BEFORE)
    assert read.notes == ["rescaled all boxes to fit the canvas (some went beyond its edges)"]
    assert all(o.box.inside(512, 512) for o in read.layout.objects)


def test_the_canvas_stays_the_scenes():
    read = read_user_layout(editable_json(BEFORE).replace('"width": 512', '"width": 768'), BEFORE)
    assert read.layout.width == 512 and "kept the scene's 512x512 canvas" in read.notes[0]


def test_a_layout_of_another_canvas_is_fitted_to_the_scenes_in_proportion():
    """A square scene's layout posted into a wide scene: each box keeps its place in the picture,
    not its pixels (which put the apple 200 px down a 320 px canvas, near its bottom)."""
    apple = {"id": 1, "caption": "a red apple", "box": [16, 125, 100, 62]}
    wide = layout_of([apple], canvas=Canvas(512, 320))
    read = read_user_layout(editable_json(BEFORE), wide)
    assert (read.layout.width, read.layout.height) == (512, 320)
    assert [o.box.as_list() for o in read.layout.objects] == [[16, 125, 100, 62], [300, 112, 120, 88]]
    assert read.notes == ["kept the scene's 512x320 canvas: the boxes, drawn on 512x512, were scaled to it"]
    # A canvas that is no canvas is not scaled from.
    read = read_user_layout(editable_json(BEFORE).replace('"width": 512', '"width": -3'), BEFORE)
    assert read.layout == BEFORE
    assert read.notes == ["kept the scene's 512x512 canvas (the layout asked for -3x512)"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("{not json", "JSON is malformed"),
        ('{"boxes": []}', '"objects" list'),
        ("a cat on a mat", "Background prompt"),
        # JSON after a word: the message names both forms, not only the text format's marker.
        ('here it is: {"objects": []}', "neither JSON (starting with {) nor"),
        # The text format reader's words are about the user's text, not "the answer" of a model.
        ("[]\nBackground prompt: x\nBackground prompt: y", "the text has more than one"),
        ("[('a cat', [0, 0, 10, 10])]\nBackground prompt: x\n" + "y" * 30_000, "limit"),
    ],
)
def test_what_is_no_layout_at_all_says_what_to_fix(text, says):
    with pytest.raises(LayoutError) as err:
        read_user_layout(text, BEFORE)
    assert says in err.value.user_message and err.value.user_message.startswith("That layout isn't valid")


def test_a_layout_too_long_for_the_edit_box_is_offered_as_lmd_text():
    objects = [
        {
            "id": i,
            "caption": f"a small shiny red apple with a green leaf, number {i}",
            "box": [i * 8, 8, 8, 8],
        }
        for i in range(1, 41)
    ]
    many = SceneLayout.model_validate(
        {"objects": objects, "background": "a table"}, context={"limits": LayoutLimits(max_objects=64)}
    )
    assert len(editable_json(many)) > EDIT_BOX_CHARS
    assert edit_box_text(many) == format_lmd_text(many)
    assert edit_box_text(BEFORE) == editable_json(BEFORE)
    # Limits raised in layout.* can make even the text format too long for the box.
    wordy = {"background": "a meadow " * 220, "negative": "people, " * 240}
    huge = SceneLayout.model_validate({"objects": objects, **wordy})
    assert len(format_lmd_text(huge)) > EDIT_BOX_CHARS and edit_box_text(huge) is None


@pytest.mark.parametrize("number", ["1" * 5000, "-" + "9" * 4400])
def test_a_number_too_long_to_read_is_a_clear_layout_error(number):
    # Python refuses to read integers of over 4300 digits with a bare ValueError, not a JSON error.
    text = editable_json(BEFORE).replace("[16, 200, 100, 100]", f"[{number}, 200, 100, 100]")
    with pytest.raises(LayoutError) as err:
        read_user_layout(text, BEFORE)
    message = err.value.user_message
    assert "too long" in message and message.startswith("That layout isn't valid")


def test_prompts_the_json_leaves_out_or_garbles_are_kept_from_the_round_it_edits():
    moved = editable_json(BEFORE).replace("[300, 180, 120, 140]", "[310, 180, 120, 140]")
    data = json.loads(moved)
    del data["background"], data["negative"]
    read = read_user_layout(json.dumps(data), BEFORE)
    assert (read.layout.background, read.layout.negative) == ("a wooden table", "people")
    assert read.notes == []
    data["background"], data["negative"] = 42, ["cats"]
    read = read_user_layout(json.dumps(data), BEFORE)
    assert (read.layout.background, read.layout.negative) == ("a wooden table", "people")
    assert read.notes == [
        "kept the scene's background: the layout's is not text (42)",
        "kept the scene's negative prompt: the layout's is not text (['cats'])",
    ]


def test_a_layout_whose_every_object_is_unusable_is_refused_with_the_reasons():
    text = editable_json(BEFORE).replace("[16, 200, 100, 100]", '["16", "200", "100", "100"]')
    text = text.replace("[300, 180, 120, 140]", "[300, 180, 0, 140]")
    with pytest.raises(LayoutError) as err:
        read_user_layout(text, BEFORE)
    message = err.value.user_message
    assert "none of its objects can be used" in message
    assert "'a red apple': its box is not four finite numbers" in message and "no area" in message
    empty = read_user_layout(editable_json(BEFORE).split('"objects"')[0] + '"objects": []}', BEFORE)
    assert empty.layout.objects == () and empty.layout.background == "a wooden table"
