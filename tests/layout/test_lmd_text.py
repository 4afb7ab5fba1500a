"""Reading and writing the LMD text format exactly as the reference reads it (section 2.3)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmd_bot.errors import LayoutError
from lmd_bot.layout import SceneLayout, format_lmd_text, parse_lmd_text, read_lmd_text
from lmd_bot.layout.io import load_layout_text

REFERENCE_ANSWER = """[('a blue dog', [50, 200, 200, 300]), ('a white bowl', [350, 250, 100, 50])]
Background prompt: A realistic scene
Negative prompt: """


def test_reads_the_reference_answer():
    layout = read_lmd_text(REFERENCE_ANSWER).layout
    assert [(o.id, o.caption, o.box.as_list()) for o in layout.objects] == [
        (1, "a blue dog", [50, 200, 200, 300]),
        (2, "a white bowl", [350, 250, 100, 50]),
    ]
    assert layout.background == "A realistic scene"
    assert layout.negative == ""


def test_keeps_the_part_after_objects_marker_and_reads_negative():
    text = (
        "Caption: two cats\nObjects: [('a cat', [0, 0, 10, 10])]\n"
        "Background prompt: A room\nNegative prompt: dogs"
    )
    layout = read_lmd_text(text).layout
    assert [o.caption for o in layout.objects] == ["a cat"]
    assert (layout.background, layout.negative) == ("A room", "dogs")


def test_negative_prompt_line_is_optional_and_none_means_empty():
    assert read_lmd_text("[]\nBackground prompt: A room").layout.negative == ""
    assert read_lmd_text("[]\nBackground prompt: A room\nNegative prompt: None").layout.negative == ""


@pytest.mark.parametrize("objects", ["[]", "No objects", "", "  No objects in this scene"])
def test_empty_object_lists(objects):
    assert read_lmd_text(f"{objects}\nBackground prompt: A street").layout.objects == ()


def test_tuples_lists_and_double_quotes_and_negative_numbers():
    text = '(("a cat\'s toy", (-0.0, 1, 2.5, 3)),)\nBackground prompt: x'
    layout = read_lmd_text(text).layout
    assert layout.objects[0].caption == "a cat's toy"
    assert layout.objects[0].box.as_list() == [0, 1, 2, 3]


def test_a_single_pair_without_list():
    assert len(read_lmd_text("('a cat', [0, 0, 10, 10])\nBackground prompt: x").layout.objects) == 1


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[('a', [0,0,1,1])]", 'no "Background prompt:"'),
        ("[]\nBackground prompt: a\nBackground prompt: b", "more than one"),
        ("[]\nBackground prompt: a\nNegative prompt: b\nNegative prompt: c", "more than one"),
        ("[('a', [0,0,1,1]\nBackground prompt: a", "not a Python-style list"),
        ("{'a': 1}\nBackground prompt: a", "unexpected Dict"),
        ("[('a', [0, 0, 1, 1], 'extra')]\nBackground prompt: a", "pair"),
        ("[True]\nBackground prompt: a", "booleans"),
    ],
)
def test_malformed_answers_are_clear_errors(text, match):
    with pytest.raises(LayoutError, match=match):
        read_lmd_text(text)


@pytest.mark.parametrize(
    "code",
    [
        "__import__('os').system('touch /tmp/pwned')",
        "[('a', [0, 0, 1, 1])] + open('/etc/passwd').read()",
        "[x for x in ().__class__.__base__.__subclasses__()]",
        "[('a', [1 + 1, 0, 1, 1])]",
        "lambda: 1",
    ],
)
def test_reading_never_evaluates_code(code, tmp_path):
    with pytest.raises(LayoutError):
        read_lmd_text(f"{code}\nBackground prompt: a")


def test_deeply_nested_and_huge_inputs_fail_cleanly():
    with pytest.raises(LayoutError):
        read_lmd_text("[" * 5000 + "]" * 5000 + "\nBackground prompt: a")
    with pytest.raises(LayoutError, match="characters long"):
        parse_lmd_text("[]" + " " * 30_000 + "\nBackground prompt: a")


def test_format_matches_reference_serialization():
    layout = read_lmd_text(REFERENCE_ANSWER.replace("Negative prompt: ", "Negative prompt: cats")).layout
    assert format_lmd_text(layout) == (
        "[('a blue dog', [50, 200, 200, 300]), ('a white bowl', [350, 250, 100, 50])]\n"
        "Background prompt: A realistic scene\nNegative prompt: cats"
    )


def test_load_layout_text_accepts_json_strictly():
    layout = SceneLayout.model_validate({"objects": [{"id": 4, "caption": "a cat", "box": [1, 2, 3, 4]}]})
    assert load_layout_text(layout.model_dump_json()).layout == layout
    with pytest.raises(LayoutError, match=r"objects\.0\.box"):
        load_layout_text('{"objects": [{"id": 1, "caption": "a cat", "box": [0, 0, 0, 4]}]}')
    with pytest.raises(LayoutError, match="malformed"):
        load_layout_text('{"objects": [')


# --- property-based round trip -------------------------------------------------------------------

caption_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)


@st.composite
def layouts(draw):
    n = draw(st.integers(0, 8))
    objects = []
    for i in range(n):
        x = draw(st.integers(0, 500))
        y = draw(st.integers(0, 500))
        w = draw(st.integers(1, 512 - x))
        h = draw(st.integers(1, 512 - y))
        if w >= 512 and h >= 512:
            w = 511
        objects.append({"id": i + 1, "caption": draw(caption_text), "box": [x, y, w, h]})
    data = {"objects": objects, "background": draw(caption_text), "negative": draw(st.text(max_size=30))}
    try:
        return SceneLayout.model_validate(data)
    except ValueError:
        from hypothesis import reject

        reject()


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_format_then_read_round_trips(layout):
    result = read_lmd_text(format_lmd_text(layout))
    assert result.layout == layout
    assert not result.notes


def test_load_layout_text_says_a_number_is_too_long_instead_of_crashing():
    big = "7" * 4500
    with pytest.raises(LayoutError, match="too long"):
        load_layout_text('{"objects": [{"id": 1, "caption": "a cat", "box": [' + big + ", 0, 3, 4]}]}")
