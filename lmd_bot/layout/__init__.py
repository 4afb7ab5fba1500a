"""The scene layout: the one type every part of lmd-bot speaks.

Imports neither torch, anthropic nor SQLAlchemy, so the bot, the CLI and the planner can use it
cheaply.
"""

from lmd_bot.layout.geometry import GridRect, centered_nbox, nbox_to_grid_rect, xywh_to_xyxy_norm
from lmd_bot.layout.lmd_text import format_lmd_text, parse_lmd_text, read_lmd_text
from lmd_bot.layout.repair import RawObject, RepairResult, repair_layout
from lmd_bot.layout.schema import Box, LayoutLimits, SceneLayout, SceneObject, clean_text

__all__ = [
    "Box",
    "GridRect",
    "LayoutLimits",
    "RawObject",
    "RepairResult",
    "SceneLayout",
    "SceneObject",
    "centered_nbox",
    "clean_text",
    "format_lmd_text",
    "nbox_to_grid_rect",
    "parse_lmd_text",
    "read_lmd_text",
    "repair_layout",
    "xywh_to_xyxy_norm",
]
