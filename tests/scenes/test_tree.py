"""Rounds as a tree: the branch to a round, and what the planner is told about it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lmd_bot.scenes.models import RoundKind, RoundRecord
from lmd_bot.scenes.tree import branch_path, planner_history
from lmd_bot.testing import layout_of

LAYOUT = layout_of([{"id": 1, "caption": "a cat", "box": [0, 0, 64, 64]}])


def _round(rid: int, parent: int | None, kind: RoundKind = RoundKind.REVISE) -> RoundRecord:
    return RoundRecord(
        id=rid,
        scene_id=1,
        parent_id=parent,
        number=rid,
        kind=kind,
        instruction=f"step {rid}",
        layout=LAYOUT,
        seed=rid,
        created_at=datetime.now(UTC),
    )


def test_the_branch_runs_from_the_first_round_and_skips_other_branches():
    rounds = {r.id: r for r in (_round(1, None, RoundKind.PLAN), _round(2, 1), _round(3, 1), _round(4, 3))}
    assert [r.id for r in branch_path(rounds, 4)] == [1, 3, 4]


def test_rerolls_are_not_part_of_the_planners_history():
    rounds = [_round(1, None, RoundKind.PLAN), _round(2, 1, RoundKind.REROLL), _round(3, 2)]
    assert [h.instruction for h in planner_history(rounds)] == ["step 1", "step 3"]


def test_a_loop_in_the_parent_links_is_an_error_not_a_hang():
    rounds = {1: _round(1, 2), 2: _round(2, 1)}
    with pytest.raises(ValueError, match="loop"):
        branch_path(rounds, 1)
    with pytest.raises(KeyError):
        branch_path(rounds, 9)
