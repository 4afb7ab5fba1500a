"""What changed between two rounds, in one line, matched by object id."""

from __future__ import annotations

from lmd_bot.scenes.diff import describe_changes
from lmd_bot.testing import layout_of

APPLE = {"id": 1, "caption": "a red apple", "box": [40, 300, 90, 90]}
CUP = {"id": 2, "caption": "a blue cup", "box": [300, 280, 80, 100]}


def test_moves_recolours_additions_and_removals_are_named():
    old = layout_of([APPLE, CUP])
    new = layout_of(
        [
            {**APPLE, "caption": "a green apple"},
            {**CUP, "box": [400, 280, 80, 100]},
            {"id": 3, "caption": "a cat", "box": [0, 0, 50, 50]},
        ],
        background="a plain room at night",
    )
    assert describe_changes(old, new) == (
        "added: a cat; changed: a red apple → a green apple; moved: a blue cup; "
        "background: a plain room at night"
    )
    assert describe_changes(new, layout_of([APPLE])).startswith("removed: a blue cup, a cat")


def test_nudges_within_tolerance_are_no_change():
    nudged = {**CUP, "box": [303, 278, 82, 100]}
    assert describe_changes(layout_of([CUP]), layout_of([nudged])) == "no changes"


def test_same_caption_changes_are_counted():
    apples = [{**APPLE, "id": i} for i in (1, 2, 3)]
    green = [{**a, "caption": "a green apple"} for a in apples]
    assert describe_changes(layout_of(apples), layout_of(green)) == "changed: 3 × a red apple → a green apple"
