"""Stage 1 of LMD: an LLM plans a scene layout from a prompt, and revises it from instructions.

``build_planner(settings)`` returns the configured :class:`Planner` (Anthropic by default, or an
OpenAI-compatible server). Importing this package loads neither ``anthropic`` nor ``aiohttp``.
"""

from lmd_bot.planner.base import Planner, PlanResult, PlanRound, Usage
from lmd_bot.planner.factory import build_planner

__all__ = ["PlanResult", "PlanRound", "Planner", "Usage", "build_planner"]
