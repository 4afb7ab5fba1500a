"""``lmd-bot bench bot``: the bot's own overhead, without Discord, an LLM or a GPU.

Simulated users drive the service layer concurrently (each: ``/imagine``, then instructions) on a
scratch SQLite file, the real queue and worker process with the instant preview renderer, and a
scripted planner that answers at once. Prints the events handled per second (queue events turned
into database updates and status messages), the latency from an instruction to its job being
queued (p50, p99: the time the bot itself adds before a GPU is involved; the job is queued just
before its plan is shown, so the clock stops there) and to the plan's picture being shown, and
the database transactions per job.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from lmd_bot.rendering import RenderMode


def add_parser(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "bot",
        help="events/s and instruction-to-enqueue latency of the service layer",
        description=(
            "Simulated users drive /imagine and instructions through the service layer with a "
            "scripted planner and the instant preview renderer; prints events/s and latency."
        ),
    )
    p.add_argument("--users", type=int, default=20, help="concurrent users (default 20)")
    p.add_argument("--instructions", type=int, default=10, help="instructions per user (default 10)")
    p.add_argument("--steps", type=int, default=2, help="preview renderer steps per job (default 2)")
    p.add_argument(
        "--think-s",
        type=float,
        default=0.0,
        help="seconds a user waits after an instruction is answered before the next one "
        "(default 0: back to back, the bot saturated)",
    )
    p.add_argument(
        "--edit-interval",
        type=float,
        default=None,
        help="seconds between edits of one status message (default: the bot's, "
        "discord.status_edit_interval_s; 0 sends every queue position to every waiting job)",
    )
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a benchmark's output is its printed table


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _bench(args: argparse.Namespace, folder: Path) -> None:
    from lmd_bot.config import load_settings
    from lmd_bot.jobs.renderers import RendererSpec
    from lmd_bot.services import Actor, PlanView, open_core
    from lmd_bot.testing import RecordingNotifier, ScriptedPlanner

    settings = load_settings(
        db={"url": f"sqlite+aiosqlite:///{folder}/bench.sqlite3"},
        storage={"image_dir": str(folder / "images")},
        diffusion={"mode": RenderMode.LMD, "steps": args.steps},
        queue={"per_user_cap": 50, "max_queued": 10_000},
        guard={"rate_limit_count": 10_000},
        discord={} if args.edit_interval is None else {"status_edit_interval_s": args.edit_interval},
    )
    core = await open_core(
        settings,
        planner=ScriptedPlanner(),
        renderer=RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer"),
    )
    notifier = RecordingNotifier(keep=False)
    core.scenes.attach(notifier)
    await core.scenes.start()
    latencies: list[float] = []
    answered: list[float] = []
    scenes = core.scenes

    async def user(uid: int) -> int:
        actor = Actor(user_id=uid, guild_id=1, channel_id=1)
        plan = await scenes.imagine(actor, "a red apple, a blue cup", notifier)
        jobs = 1
        for _ in range(args.instructions):
            watch = _Stopwatch(notifier)
            outcome = await scenes.instruct(actor, plan.scene.id, "move cup right", watch)
            assert isinstance(outcome, PlanView) and outcome.job is not None and watch.shown is not None
            latencies.append(watch.shown - watch.start)
            answered.append(time.perf_counter() - watch.start)
            jobs += 1
            if args.think_s:
                await asyncio.sleep(args.think_s)
        return jobs

    try:
        started = time.perf_counter()
        jobs = sum(await asyncio.gather(*(user(u) for u in range(1, args.users + 1))))
        queued_in = time.perf_counter() - started
        while notifier.finished_jobs < jobs:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        events = scenes.events_handled
    finally:
        await core.close()
    ms = [v * 1000 for v in latencies]
    full_ms = [v * 1000 for v in answered]
    _say(
        f"lmd-bot bench bot: {args.users} users x (1 scene + {args.instructions} instructions), "
        f"scripted planner, preview renderer ({args.steps} steps), SQLite, "
        f"status edits every {settings.discord.status_edit_interval_s:g} s, "
        f"{args.think_s:g} s between a user's instructions"
    )
    rows = [
        ("jobs rendered", f"{jobs}"),
        ("all queued in", f"{queued_in:.2f} s"),
        ("all rendered in", f"{elapsed:.2f} s"),
        ("queue events handled", f"{events} ({events / elapsed:.0f} events/s)"),
        ("status updates delivered", f"{notifier.counts.get('StatusView', 0)}"),
        ("instruction -> enqueued p50", f"{statistics.median(ms):.1f} ms"),
        ("instruction -> enqueued p99", f"{_percentile(ms, 0.99):.1f} ms"),
        ("instruction -> enqueued max", f"{max(ms):.1f} ms"),
        ("instruction -> picture p50", f"{statistics.median(full_ms):.1f} ms"),
        ("instruction -> picture p99", f"{_percentile(full_ms, 0.99):.1f} ms"),
        ("database writes per job", f"{core.db.writes / jobs:.1f}"),
        ("database reads per job", f"{core.db.reads / jobs:.1f}"),
        ("writes that waited for a lock", f"{core.db.waits}"),
    ]
    for name, value in rows:
        _say(f"  {name:<30} {value}")


class _Stopwatch:
    """One instruction's presenter: notes when the plan is shown (its job queued just before),
    and passes everything on to the shared recorder."""

    def __init__(self, notifier) -> None:
        self._notifier = notifier
        self.start = time.perf_counter()
        self.shown: float | None = None

    async def show_plan(self, view):
        self.shown = time.perf_counter()
        return await self._notifier.show_plan(view)

    async def show_plan_picture(self, view, shown) -> None:
        await self._notifier.show_plan_picture(view, shown)

    async def show_reply(self, view) -> None:
        await self._notifier.show_reply(view)

    async def show_undo(self, view):
        return await self._notifier.show_undo(view)


def run(args: argparse.Namespace) -> int:
    if args.users < 1 or args.instructions < 1 or not 1 <= args.steps <= 150:
        _say("error: --users and --instructions must be at least 1, --steps 1..150")
        return 2
    if args.edit_interval is not None and not 0 <= args.edit_interval <= 60:
        _say("error: --edit-interval must be 0..60 seconds")
        return 2
    if not 0 <= args.think_s <= 60:
        _say("error: --think-s must be 0..60 seconds")
        return 2
    with tempfile.TemporaryDirectory(prefix="lmd-bench-bot-") as folder:
        asyncio.run(_bench(args, Path(folder)))
    return 0
