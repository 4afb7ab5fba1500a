"""``lmd-bot plan``: plan a layout with the configured LLM, or revise one from a scene's history.

::

    lmd-bot plan "three red apples and a blue cup on a table" --history-out scene.json
    lmd-bot plan --revise scene.json "make the cup green" --history-out scene.json

Prints the layout as JSON and in the LMD text format (or the planner's reply), writes the plan
picture (PNG, default ``plan.png``), and reports repairs and token usage on stderr. A history file
is a JSON list of rounds, ``[{"instruction": "...", "layout": {...}}, ...]``, oldest first;
``--history-out`` writes the history with the new round appended, ready for the next ``--revise``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmd_bot.layout.schema import LayoutLimits
    from lmd_bot.planner import PlanRound


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan a layout with the LLM planner, or revise one (--revise)")
    p.add_argument("text", help="the scene to plan, or with --revise the edit instruction")
    p.add_argument(
        "--revise", type=Path, metavar="HISTORY.json", help="revise the last round of this scene history"
    )
    p.add_argument(
        "--overlay", type=Path, default=Path("plan.png"), help="where to write the plan picture (PNG)"
    )
    p.add_argument("--history-out", type=Path, metavar="PATH", help="write the history with this round added")
    p.set_defaults(func=run)


def _load_history(path: Path, limits: LayoutLimits) -> list[PlanRound]:
    from pydantic import TypeAdapter, ValidationError

    from lmd_bot.errors import LayoutError
    from lmd_bot.layout.io import describe_validation_error, read_text_file
    from lmd_bot.planner import PlanRound

    text = read_text_file(path, "scene history")
    try:
        rounds = TypeAdapter(list[PlanRound]).validate_json(text, context={"limits": limits})
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        raise LayoutError(
            f"{path} is not a scene history: {'; '.join(problems[:3])}", problems=problems
        ) from None
    if not rounds:
        raise LayoutError(f"{path} holds no rounds")
    return rounds


def run(args: argparse.Namespace) -> int:
    import asyncio

    from lmd_bot.commands import check_writable, write_output
    from lmd_bot.config import load_settings
    from lmd_bot.layout import format_lmd_text
    from lmd_bot.overlay import draw_overlay
    from lmd_bot.planner import PlanRound, build_planner

    settings = load_settings()
    # Checked before the LLM is asked, so a typo in a path costs no tokens.
    check_writable(args.overlay, "plan picture")
    if args.history_out:
        check_writable(args.history_out, "scene history")
    history = _load_history(args.revise, settings.layout.limits()) if args.revise else []
    planner = build_planner(settings)

    async def go():
        try:
            if history:
                return await planner.revise(history, args.text)
            return await planner.plan(args.text)
        finally:
            await planner.aclose()

    result = asyncio.run(go())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)  # noqa: T201
    u = result.usage
    print(  # noqa: T201
        f"usage: {u.input_tokens} input, {u.output_tokens} output, {u.cache_read_tokens} cache read, "
        f"{u.cache_write_tokens} cache write tokens; {result.attempts} request(s)",
        file=sys.stderr,
    )
    if result.layout is None:
        print(result.reply)  # noqa: T201
        return 0
    layout = result.layout
    print(json.dumps(layout.model_dump(), indent=2, ensure_ascii=False))  # noqa: T201
    print()  # noqa: T201
    print(format_lmd_text(layout))  # noqa: T201
    write_output(args.overlay, draw_overlay(layout), "plan picture")
    print(f"wrote {args.overlay}", file=sys.stderr)  # noqa: T201
    if args.history_out:
        rounds = [*history, PlanRound(instruction=args.text, layout=layout)]
        history_json = json.dumps([r.model_dump() for r in rounds], indent=2, ensure_ascii=False)
        write_output(args.history_out, history_json.encode(), "scene history")
        print(f"wrote {args.history_out}", file=sys.stderr)  # noqa: T201
    return 0
