"""Running the planner on the benchmark's prompts: concurrent, resumable, with a bill.

Answers are kept in the reference's cache format (prompt -> list of raw LMD-text answers),
rewritten atomically after each answer, so an interrupted run loses at most the calls in flight
and a rerun plans only what is missing. A prompt asked several times (the negation repeats) gets
one planner call per repeat; its answers are interchangeable, so a rerun fills the list up to the
number of repeats. A call that fails (planner error, or a reply instead of a layout) is recorded
as a failure of this run, not in the file, so the next run tries it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmd_bot.errors import PlannerError
from lmd_bot.eval.prompts import BenchmarkPrompt
from lmd_bot.eval.responses import load_responses, save_responses
from lmd_bot.layout import format_lmd_text
from lmd_bot.planner.base import Planner, Usage

log = logging.getLogger(__name__)


@dataclass
class PlanRun:
    responses: dict[str, list[str]]
    failures: dict[str, list[str]] = field(default_factory=dict)  # prompt -> why each call failed
    usage: Usage = field(default_factory=Usage)
    planned: int = 0  # answers added by this run


def pending_calls(prompts: Sequence[BenchmarkPrompt], responses: dict[str, list[str]]) -> list[str]:
    """The prompt of every planner call still to make: one per repeat beyond the recorded answers."""
    wanted = Counter(p.prompt for p in prompts)
    pending = []
    for prompt, n in wanted.items():
        pending += [prompt] * max(0, n - len(responses.get(prompt, [])))
    return pending


async def plan_benchmark(
    planner: Planner,
    prompts: Sequence[BenchmarkPrompt],
    responses_path: Path,
    *,
    concurrency: int = 4,
    on_answer: Callable[[int, int], None] | None = None,
) -> PlanRun:
    """Plan every pending call, ``concurrency`` at a time; ``on_answer(done, total)`` after each."""
    responses = load_responses(responses_path) if responses_path.exists() else {}
    run = PlanRun(responses=responses)
    calls = pending_calls(prompts, responses)
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(prompt: str) -> None:
        nonlocal done
        async with semaphore:
            try:
                result = await planner.plan(prompt)
            except PlannerError as exc:
                log.warning("planning %r failed: %s", prompt, exc)
                run.failures.setdefault(prompt, []).append(f"planner error: {exc.user_message}")
            else:
                run.usage += result.usage
                if result.layout is None:
                    reply = (result.reply or "")[:200]
                    run.failures.setdefault(prompt, []).append(f"the planner replied instead: {reply!r}")
                else:
                    responses.setdefault(prompt, []).append(format_lmd_text(result.layout))
                    run.planned += 1
                    # Single-threaded event loop: nothing else touches `responses` during the write.
                    save_responses(responses_path, responses)
            done += 1
            if on_answer:
                on_answer(done, len(calls))

    await asyncio.gather(*(one(prompt) for prompt in calls))
    return run
