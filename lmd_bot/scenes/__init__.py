"""Scenes: what a user refines over rounds in a thread. Rounds form a tree (a reroll or an edit of
an older round branches from it); the planner sees the path from the first round to the one being
edited. Pure types and functions: no database, no queue, no Discord."""

from lmd_bot.scenes.diff import describe_changes
from lmd_bot.scenes.models import (
    EditorsPolicy,
    JobRecord,
    JobStatus,
    MessageKind,
    MessageRef,
    RoundKind,
    RoundRecord,
    SafetyPolicy,
    SceneRecord,
    ServerSettings,
)
from lmd_bot.scenes.tree import branch_path, planner_history

__all__ = [
    "EditorsPolicy",
    "JobRecord",
    "JobStatus",
    "MessageKind",
    "MessageRef",
    "RoundKind",
    "RoundRecord",
    "SafetyPolicy",
    "SceneRecord",
    "ServerSettings",
    "branch_path",
    "describe_changes",
    "planner_history",
]
