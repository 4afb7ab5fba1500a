"""Stage-1 scoring: the reference's box filter, recorded answers, and the command end to end."""

import json

import pytest

from lmd_bot.cli import main
from lmd_bot.errors import LayoutError
from lmd_bot.eval.layouts import evaluate_layouts, layout_boxes, reference_filter
from lmd_bot.eval.prompts import lmd_benchmark_prompts
from lmd_bot.layout import RawObject
from tests.eval.answers import correct_answer, correct_objects, lmd_text

PROMPTS = lmd_benchmark_prompts()


def boxes_of(*objects):
    return [(b.name, list(b.box)) for b in reference_filter([RawObject(n, box) for n, box in objects])]


def test_filter_keeps_in_canvas_boxes_and_strips_full_stops():
    assert boxes_of(("a cat.", [10, 20, 30, 40.4]), ("a dog", [100, 100, 50, 50])) == [
        ("a cat", [10, 20, 30, 40]),
        ("a dog", [100, 100, 50, 50]),
    ]


def test_filter_drops_empty_and_background_boxes():
    kept = boxes_of(
        ("no box", []),
        ("flat", [10, 10, 0, 50]),
        ("negative", [10, 10, 50, -5]),
        ("the whole scene", [0, 0, 512, 512]),
        ("past the right edge", [513, 0, 10, 10]),
        ("a cup", [10, 10, 50, 50]),
    )
    assert kept == [("a cup", [10, 10, 50, 50])]


def test_filter_rescales_every_box_when_one_leaves_the_canvas():
    # The dog spans x 300..600: all boxes shift left by 100 and shrink by 512/500.
    kept = boxes_of(("a cat", [100, 100, 100, 100]), ("a dog", [300, 100, 300, 100]))
    scale = 512 / 500
    assert kept == [
        ("a cat", [0, round(100 * scale), round(100 * scale), round(100 * scale)]),
        ("a dog", [round(200 * scale), round(100 * scale), round(300 * scale), round(100 * scale)]),
    ]


def test_filter_rejects_what_the_reference_could_not_read():
    with pytest.raises(LayoutError):
        reference_filter([RawObject("a cat", [1, 2, 3])])
    with pytest.raises(LayoutError):
        reference_filter([RawObject(7, [1, 2, 3, 4])])
    with pytest.raises(LayoutError):
        layout_boxes("[('a cat', [1, 2, 3, 4])]")  # no "Background prompt:" line


def test_negation_answer_with_no_objects_passes():
    item = PROMPTS[0]
    results = evaluate_layouts(
        [item], {item.prompt: ["[]\nBackground prompt: A room\nNegative prompt: backpacks"]}
    )
    assert results[0].passed


def test_repeated_prompts_take_answers_in_order_and_unparsable_ones_are_used_up():
    items = PROMPTS[100:102]  # "one backpack", asked twice
    prompt = items[0].prompt
    one = lmd_text([("a backpack", [10, 10, 100, 100])])
    two = lmd_text([("a backpack", [10, 10, 100, 100]), ("a backpack", [200, 10, 100, 100])])
    results = evaluate_layouts(items, {prompt: [two, "garbage", one]})
    assert [r.passed for r in results] == [False, True]
    assert results[0].source == "answer 1 of 3"
    assert results[1].source.startswith("answer 3 of 3 (skipped unparsable: answer 2")


def test_prompts_without_answers_are_not_evaluated_and_unparsable_ones_fail():
    items = PROMPTS[100:102]
    results = evaluate_layouts(items, {items[0].prompt: ["garbage"]})
    assert results[0].passed is False
    assert results[0].found.startswith("no recorded answer parses")
    assert results[1].passed is None


def test_planner_failures_count_as_failures():
    items = PROMPTS[100:102]
    answer = lmd_text([("a backpack", [10, 10, 100, 100])])
    results = evaluate_layouts(
        items, {items[0].prompt: [answer]}, failures={items[0].prompt: ["planner error: x"]}
    )
    assert [r.passed for r in results] == [True, False]
    assert results[1].found == "planner error: x"


def test_eval_layouts_command_scores_a_recorded_answer_file(tmp_path, capsys):
    """End to end: an answer file for all 400 prompts, a few of them wrong in known ways."""
    answers: dict[str, list[str]] = {}
    for item in PROMPTS:
        answers.setdefault(item.prompt, []).append(correct_answer(item))
    # Negation: one of the ten "without backpacks" answers draws a backpack anyway.
    answers[PROMPTS[0].prompt][3] = lmd_text([("a red backpack", [0, 0, 50, 50])])
    # Numeracy: one box short for "five laptops" (both repeats).
    five = PROMPTS[198]
    answers[five.prompt] = [lmd_text(correct_objects(five)[:4])] * 2
    # Attribution: colours swapped; and a second answer that only loses a full stop.
    attr = PROMPTS[200]
    (_, b1), (_, b2) = correct_objects(attr)
    answers[attr.prompt] = [lmd_text([("a white dog", b1), ("a blue bowl", b2)])]
    attr2 = PROMPTS[201]
    answers[attr2.prompt] = [lmd_text([(n + ".", b) for n, b in correct_objects(attr2)])]
    # Spatial: both objects in the same column for a left/right prompt (a tie).
    spatial = PROMPTS[300]
    (s1, _), (s2, _) = correct_objects(spatial)
    answers[spatial.prompt] = [lmd_text([(s1, [100, 0, 100, 100]), (s2, [100, 300, 100, 100])])]
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(answers))

    out = tmp_path / "report"
    assert main(["eval", "layouts", "--responses", str(path), "--out", str(out)]) == 0

    data = json.loads((out / "report.json").read_text())
    assert data["accuracy"]["layouts"] == {
        "negation": 99.0,
        "numeracy": 98.0,
        "attribution": 99.0,
        "spatial": 99.0,
        "average": 98.75,
    }
    failures = [i for i in data["runs"][0]["items"] if i["passed"] is False]
    assert [i["index"] for i in failures] == [3, 198, 199, 200, 300]

    md = (out / "report.md").read_text()
    assert "| Numeracy | 98.0 (98/100) | 97.0 | 100.0 |" in md
    assert "## Failures: layouts (5)" in md
    assert (
        "| 198 | numeracy | A realistic photo of a scene with five laptops | exactly 5 × laptop | 4 × laptop"
        in md
    )
    assert "'a blue dog' and 'a white bowl'" in md
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert "negation 99.0" in capsys.readouterr().err


def test_eval_layouts_command_reports_a_bad_file_clearly(tmp_path, capsys):
    path = tmp_path / "answers.json"
    path.write_text('{"A realistic photo of a scene without cats": "not a list"}')
    assert main(["eval", "layouts", "--responses", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: the value for 'A realistic photo of a scene without cats' must be a list" in err
    assert not (tmp_path / "r").exists()
    path.write_text('{"A realistic photo of a scene without cats": ["')  # cut off
    assert main(["eval", "layouts", "--responses", str(path), "--out", str(tmp_path / "r")]) == 2
    assert f"error: {path}: it is not valid JSON (" in capsys.readouterr().err  # which file: named
