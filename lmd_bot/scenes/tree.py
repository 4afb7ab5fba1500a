"""Rounds as a tree: the branch from the first round to a given one, and the planner's history."""

from __future__ import annotations

from collections.abc import Mapping

from lmd_bot.planner.base import PlanRound
from lmd_bot.scenes.models import RoundKind, RoundRecord


def branch_path(rounds: Mapping[int, RoundRecord], round_id: int) -> list[RoundRecord]:
    """The rounds from the scene's first round down to ``round_id``, in order.

    Raises KeyError for an unknown round and ValueError if the parent links loop (a corrupt
    database must not hang the bot).
    """
    path: list[RoundRecord] = []
    seen: set[int] = set()
    current: int | None = round_id
    while current is not None:
        if current in seen:
            raise ValueError(f"round {round_id}: the parent links form a loop at round {current}")
        seen.add(current)
        record = rounds[current]
        path.append(record)
        current = record.parent_id
    path.reverse()
    return path


def planner_history(path: list[RoundRecord]) -> list[PlanRound]:
    """What the planner is told about a branch: each instruction and the layout that answered it.

    Rerolls are left out: they repeat their parent's layout and say nothing about what the user
    wants.
    """
    return [PlanRound(instruction=r.instruction, layout=r.layout) for r in path if r.kind != RoundKind.REROLL]
