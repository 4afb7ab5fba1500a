"""Stage 1 of LMD: an LLM plans a scene layout from a prompt, and revises it from instructions."""

from lmd_bot.planner.base import Planner, PlanResult, PlanRound, Usage

__all__ = ["PlanResult", "PlanRound", "Planner", "Usage"]
