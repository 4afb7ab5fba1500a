"""Findings on the shapes world's own renders, checked by the world's detector: what is found,
missing, outside its box, extra and unwanted, and the reply's one line."""

from PIL import Image

from lmd_bot.layout.schema import SceneLayout
from lmd_bot.selfcheck.detectors import ShapesChecker
from lmd_bot.selfcheck.findings import excluded_things
from lmd_bot.selfcheck.loop import SelfChecker
from lmd_bot.selfcheck.report import CheckReport, Finding, Problem
from lmd_bot.shapes.world import Background, Colour, Scene, Shape, ShapeObject, render

RED_CIRCLE = ShapeObject(Shape.CIRCLE, Colour.RED, 6, 22, 20)
BLUE_SQUARE = ShapeObject(Shape.SQUARE, Colour.BLUE, 38, 22, 20)


def _image(*objects: ShapeObject) -> Image.Image:
    scene = Scene(Background.WHITE_WALL, tuple(objects), caption="", phrases=(), seed=0)
    return Image.fromarray(render(scene))


def _layout(*objects: tuple[str, ShapeObject], negative: str = "") -> SceneLayout:
    return SceneLayout.model_validate(
        {
            "width": 64,
            "height": 64,
            "background": "a white wall",
            "negative": negative,
            "objects": [
                {"id": i, "caption": caption, "box": [o.x0, o.y0, o.side, o.side]}
                for i, (caption, o) in enumerate(objects, start=1)
            ],
        }
    )


CHECKER = SelfChecker(ShapesChecker())
LAYOUT = _layout(("a red circle", RED_CIRCLE), ("a blue square", BLUE_SQUARE))


def test_a_correct_image_has_every_object_found_and_no_findings():
    result = CHECKER.assess(LAYOUT, _image(RED_CIRCLE, BLUE_SQUARE))
    assert result.found_ids == {1, 2} and result.findings == () and result.fixable_ids == ()


def test_a_missing_object_is_found_missing():
    result = CHECKER.assess(LAYOUT, _image(RED_CIRCLE))
    assert result.found_ids == {1}
    assert result.findings == (Finding(problem=Problem.MISSING, caption="a blue square", object_id=2),)
    assert result.fixable_ids == (2,)


def test_an_object_outside_its_box_is_misplaced_and_a_wrong_colour_is_missing():
    moved = ShapeObject(Shape.SQUARE, Colour.BLUE, 38, 2, 12)  # above its box, not in it
    result = CHECKER.assess(LAYOUT, _image(RED_CIRCLE, moved))
    assert result.findings == (Finding(problem=Problem.MISPLACED, caption="a blue square", object_id=2),)
    green = ShapeObject(Shape.SQUARE, Colour.GREEN, 38, 22, 20)
    result = CHECKER.assess(LAYOUT, _image(RED_CIRCLE, green))
    assert [f.problem for f in result.findings] == [Problem.MISSING]


def test_an_extra_instance_of_a_counted_object_and_an_excluded_thing_are_reported():
    left = ShapeObject(Shape.CIRCLE, Colour.RED, 4, 24, 16)
    right = ShapeObject(Shape.CIRCLE, Colour.RED, 44, 24, 16)
    third = ShapeObject(Shape.CIRCLE, Colour.RED, 24, 44, 14)
    square = ShapeObject(Shape.SQUARE, Colour.BLUE, 24, 4, 14)
    layout = _layout(("a circle", left), ("a circle", right), negative="squares")
    result = CHECKER.assess(layout, _image(left, right, third, square))
    assert result.found_ids == {1, 2}
    assert set(result.findings) == {
        Finding(problem=Problem.EXTRA, caption="a circle", count=1),
        Finding(problem=Problem.UNWANTED, caption="a square", count=1),
    }
    assert result.fixable_ids == ()  # only objects are re-generated
    assert CHECKER.assess(layout, _image(left, right)).findings == ()


def test_a_plain_and_a_coloured_phrase_of_one_shape_are_two_objects_not_an_extra_instance():
    """The shapes detector answers "a circle" and "a red circle" with the same red circle: one
    detection, matched to one object, whichever phrase it fits (shape, and colour when named)."""
    red = ShapeObject(Shape.CIRCLE, Colour.RED, 6, 22, 20)
    blue = ShapeObject(Shape.CIRCLE, Colour.BLUE, 38, 22, 20)
    layout = _layout(("a red circle", red), ("a circle", blue))
    result = CHECKER.assess(layout, _image(red, blue))
    assert result.found_ids == {1, 2} and result.findings == ()
    # a red circle is a circle: drawn red, the plain circle is found too
    red_too = ShapeObject(Shape.CIRCLE, Colour.RED, 38, 22, 20)
    result = CHECKER.assess(layout, _image(red, red_too))
    assert result.found_ids == {1, 2} and result.findings == ()
    # one red circle cannot be both objects; a third circle is one extra, named as specifically as it fits
    result = CHECKER.assess(layout, _image(red))
    assert result.found_ids == {1}
    assert result.findings == (Finding(problem=Problem.MISSING, caption="a circle", object_id=2),)
    third = ShapeObject(Shape.CIRCLE, Colour.RED, 24, 46, 14)
    result = CHECKER.assess(layout, _image(red, blue, third))
    assert result.found_ids == {1, 2}
    assert result.findings == (Finding(problem=Problem.EXTRA, caption="a red circle", count=1),)
    # excluding circles does not make the red circle asked for unwanted; another circle is
    negated = _layout(("a red circle", red), negative="circles")
    assert CHECKER.assess(negated, _image(red)).findings == ()
    assert CHECKER.assess(negated, _image(red, blue)).findings == (
        Finding(problem=Problem.UNWANTED, caption="a circle", count=1),
    )


def test_words_the_detector_does_not_know_leave_their_object_unchecked_not_missing():
    layout = _layout(("a red circle", RED_CIRCLE), ("a big friendly dragon", BLUE_SQUARE))
    result = CHECKER.assess(layout, _image(RED_CIRCLE))
    assert result.found_ids == {1} and result.unchecked_ids == {2} and result.findings == ()


def test_excluded_things_are_singular_with_an_article():
    assert excluded_things("cats, two dogs and an umbrella") == ["a cat", "a dog", "an umbrella"]
    assert excluded_things("") == []


def test_the_reply_line_says_what_happened():
    fixed = CheckReport(detector="OWLv2", objects=4, found=4, fixed=("a blue cup",), retries=1, max_retries=2)
    assert fixed.line() == "self-check: 4/4 objects found; fixed 1 (the blue cup) in 1 retry"
    unfixed = CheckReport(
        detector="shapes",
        objects=2,
        found=1,
        retries=2,
        max_retries=2,
        remaining=(
            Finding(problem=Problem.MISSING, caption="a red cup", object_id=2),
            Finding(problem=Problem.UNWANTED, caption="a dog", count=1),
        ),
    )
    assert unfixed.line() == (
        "self-check: 1/2 objects found; still missing: the red cup; unwanted but present: the dog; "
        "2 retries did not fix it"
    )
    assert unfixed.missing_ids == (2,)
