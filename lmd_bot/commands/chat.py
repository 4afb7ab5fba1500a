"""``lmd-bot chat``: the bot's scene flow in a terminal, through the same service layer.

::

    lmd-bot chat --renderer preview          # no GPU needed: the preview renderer draws the plan
    lmd-bot chat --shapes                    # the shapes world's models: real grounding on a CPU
    > three red apples on a table left of a blue cup
    > move the cup to the right
    > /reroll
    > /undo
    > /refine                               # where diffusion.refine is "button"

The first line (or ``/imagine PROMPT``) starts a scene; later lines are instructions to it.
Images (each round's plan, result and overlay) are written to ``--out``. The database, the queue
and the worker process are the bot's own (configured as for the bot; ``--db`` picks another
database, e.g. a scratch file). SDXL refinement follows ``diffusion.refine`` as in the bot: ``on``
refines every image, ``button`` offers ``/refine`` for the last one (the ✨ button's terminal form).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmd_bot.rendering import MAX_CANDIDATES, RenderMode, candidate_seeds

if TYPE_CHECKING:
    from lmd_bot.services import (
        Core,
        FailureView,
        PlanShown,
        PlanView,
        ReplyView,
        ResultView,
        StatusView,
        UndoView,
    )

CONSOLE_USER = 0

HELP = """Type a scene to start (or /imagine PROMPT), then instructions to change it.
  /reroll         the current round again with a new seed (a grid: every candidate)
  /pick N         go on from candidate N of the last grid (--candidates)
  /refine         refine the last image with the SDXL refiner (diffusion.refine = "button")
  /undo           back to the previous round
  /layout         the current layout as JSON
  /queue          what is rendering and waiting
  /new PROMPT     start another scene
  /quit           leave (Ctrl+D works too)"""
COMMANDS = frozenset(word for word in HELP.split() if word.startswith("/")) | {"/exit", "/help"}
COMMAND = re.compile(r"/[A-Za-z]+")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="the bot's scene flow in a terminal (images written to a folder)")
    p.add_argument(
        "--out", type=Path, default=Path("out/chat"), help="folder for the images (default out/chat)"
    )
    p.add_argument(
        "--renderer",
        choices=("diffusion", "tiny", "preview"),
        help="override queue.renderer: preview draws the plan without a GPU",
    )
    p.add_argument("--mode", choices=[m.value for m in RenderMode], help="rendering mode (default: config)")
    p.add_argument("--steps", type=int, help="denoising steps (default: config)")
    p.add_argument(
        "--candidates",
        type=int,
        help="render 1 to 4 seeds of each new scene as one grid; /pick N goes on from one",
    )
    p.add_argument("--db", metavar="URL", help="database URL (default: db.url)")
    p.add_argument(
        "--shapes",
        action="store_true",
        help="draw with the shapes-world models shipped with lmd-bot (64 px, CPU, no download; "
        "ask for circles, squares, triangles, diamonds: docs/shapes.md)",
    )
    p.set_defaults(func=run)


class ConsoleNotifier:
    """The terminal's notifier and presenter: prints plans, replies and status lines, and writes
    plan pictures and results to the output folder."""

    def __init__(self, out: Path, say: Callable[[str], None]) -> None:
        self.out = out
        self.say = say
        self.finished: dict[int, asyncio.Event] = {}
        self.last_result: dict[int, ResultView] = {}  # scene id -> its latest result
        self._last_line: dict[int, str] = {}

    def waiter(self, job_id: int) -> asyncio.Event:
        return self.finished.setdefault(job_id, asyncio.Event())

    async def show_status(self, view: StatusView) -> int:
        if view.state == "queued":
            line = f"queued, position {view.position} of {view.waiting}"
            if view.note:  # why it waits
                line = f"{line} ({view.note})"
        elif view.state == "running":
            line = f"rendering, step {view.step}/{view.total_steps}" if view.step else "rendering…"
            if view.note:  # another try: why
                line = f"{line} ({view.note})"
        elif view.state == "retrying":
            line = view.note or "retrying"
        else:
            line = f"cancelled ({view.note})" if view.note else "cancelled"
            self.waiter(view.job.id).set()
        if self._last_line.get(view.job.id) != line:
            self._last_line[view.job.id] = line
            self.say(f"  round {view.round_number}: {line}")
        return view.job.id

    async def show_result(self, view: ResultView) -> int:
        self.last_result[view.scene.id] = view
        refined = "-refined" if view.job.refine else ""  # beside the image it refines, not over it
        stem = f"scene{view.scene.id}-round{view.round.number}-seed{view.job.seed}{refined}"
        if view.withheld:
            self.say(f"  round {view.round.number}: withheld (flagged by the safety checker)")
        else:
            files = ((f"{stem}.png", view.image_png), (f"{stem}-overlay.png", view.overlay_png))
            problem = await self._save(*files)
            took = f" in {view.render_s:.1f} s" if view.render_s is not None else ""
            flagged = " (flagged by the safety checker)" if view.spoiler else ""
            refined = ", refined" if view.job.refine else ""
            self.say(
                f"  round {view.round.number}, seed {view.job.seed}{refined}{took}{flagged}: "
                f"{problem or f'{self.out / stem}.png'}"
            )
            if view.round.candidates > 1:
                seeds = candidate_seeds(view.job.seed, view.round.candidates)
                listed = ", ".join(f"{k}: seed {s}" for k, s in enumerate(seeds, 1))
                self.say(f"  {len(seeds)} candidates ({listed}): /pick N to go on from one")
            if view.check is not None:
                self.say(f"  {view.check.line()}")
            if warning := view.guidance_warning():
                self.say(f"  warning: {warning}")
            if view.refinable and view.round.candidates == 1:  # where the bot shows ✨ Refine
                self.say("  /refine refines it with the SDXL refiner")
        self.waiter(view.job.id).set()
        return view.job.id

    async def show_failure(self, view: FailureView) -> int:
        self.say(f"  round {view.round_number}: {view.message}")
        self.waiter(view.job.id).set()
        return view.job.id

    async def show_plan(self, view: PlanView) -> PlanShown:
        from lmd_bot.services import PlanShown

        layout = view.round.layout
        objects = ", ".join(o.caption for o in layout.objects) or "no objects"
        self.say(f"round {view.round.number}: {objects}; background: {layout.background}")
        if view.changes:
            self.say(f"  changed: {view.changes}")
        return PlanShown()

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        name = f"scene{view.scene.id}-round{view.round.number}-plan.png"
        problem = await self._save((name, view.overlay_png))
        self.say(f"  plan: {problem or self.out / name}")

    async def show_reply(self, view: ReplyView) -> None:
        self.say(view.text)

    async def show_undo(self, view: UndoView) -> None:
        self.say(f"back to round {view.round.number}")
        if view.result is not None and view.result.image_png:
            await self.show_result(view.result)

    async def _save(self, *files: tuple[str, bytes | None]) -> str | None:
        """Write ``(name, data)`` files into the output folder; what went wrong, or None. A folder
        that became unwritable (removed, full) is said on the picture's line: the round still ends
        and the chat goes on."""
        for name, data in files:
            if not data:
                continue
            path = self.out / name
            try:
                await asyncio.to_thread(_write_file, path, data)
            except OSError as exc:
                return f"could not write {path}: {exc.strerror or exc}"
        return None


async def chat(
    core: Core, lines: AsyncIterator[str], out: Path, say: Callable[[str], None], **imagine: Any
) -> None:
    """Run the scene flow over ``lines`` (one command or instruction each) until they end."""
    from lmd_bot.errors import LmdError
    from lmd_bot.services import Actor, PlanView

    notifier = ConsoleNotifier(out, say)
    core.scenes.attach(notifier)
    await core.scenes.start()
    actor = Actor(user_id=CONSOLE_USER)
    scenes = core.scenes
    scene_id: int | None = None

    async def wait_for(job) -> None:
        if job is not None:  # None: the plan was shown but not queued (the reason was said)
            await notifier.waiter(job.id).wait()

    say(HELP.splitlines()[0])
    async for raw in lines:
        line = raw.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if not COMMAND.fullmatch(command):
            command = ""  # a scene or an instruction, even one that starts with "/"
        elif (command := command.lower()) not in COMMANDS:  # a typo is no instruction for the LLM
            say(f"Unknown command {line.partition(' ')[0]}: /help lists the commands.")
            continue
        try:
            if command in ("/quit", "/exit"):
                break
            if command == "/help":
                say(HELP)
            elif command == "/queue":
                view = await scenes.queue_view(actor)
                say(f"rendering: {len(view.running)}, waiting: {len(view.waiting)}")
            elif scene_id is None and command.startswith("/") and command not in ("/imagine", "/new"):
                say("Start a scene first: type what to draw.")
            elif command in ("/imagine", "/new") or scene_id is None:
                prompt = rest if command in ("/imagine", "/new") else line
                plan = await scenes.imagine(actor, prompt, notifier, **imagine)
                if isinstance(plan, PlanView):
                    scene_id = plan.scene.id
                    await wait_for(plan.job)
            elif command == "/reroll":
                job = await scenes.reroll(actor, (await scenes.head_round(scene_id)).id)
                say(f"rerolling with seed {job.seed}")
                await wait_for(job)
            elif command == "/pick":
                grid = notifier.last_result.get(scene_id)
                if grid is None or not rest.strip().isdigit():
                    say("Pick a candidate of the last grid: /pick 1 to /pick 4.")
                    continue
                if grid.round.candidates == 1:  # the service's answer names Discord's option
                    say(
                        "The last image is not a grid: start the chat with --candidates 2 to "
                        f"{MAX_CANDIDATES} to get grids."
                    )
                    continue
                picked = await core.candidates.pick(actor, grid.job.id, int(rest))
                await notifier.waiter(picked.job.id).wait()
            elif command == "/refine":
                last = notifier.last_result.get(scene_id)
                if last is None:
                    say("Nothing to refine yet: /refine refines the last image once it is rendered.")
                elif last.round.candidates > 1:
                    say("Pick a candidate first (/pick N), then /refine it.")
                else:
                    job, queued = await core.refines.refine(actor, last.job.id)
                    if queued or job.status.active:
                        say("refining the last image")
                        await notifier.waiter(job.id).wait()
                    else:
                        say("That image was refined already: see the refined file above.")
            elif command == "/layout":
                say(await scenes.layout_json((await scenes.head_round(scene_id)).id))
            else:
                text = "undo" if command == "/undo" else line
                outcome = await scenes.instruct(actor, scene_id, text, notifier)
                if isinstance(outcome, PlanView):
                    await wait_for(outcome.job)
        except LmdError as exc:
            say(exc.user_message)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


NOT_UTF8 = "That line is not UTF-8 text, so it was skipped: set your terminal to UTF-8."

# What the reader thread hands over: a line, a line that was no text, or None at the end of input.
Read = str | UnicodeDecodeError | None


def _read_line(fd: int, pending: bytearray) -> Read:
    """The next line of ``fd`` (bytes after it stay in ``pending``), decoded as UTF-8."""
    while (end := pending.find(b"\n")) < 0:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the terminal went away
            chunk = b""
        if not chunk:
            if not pending:
                return None
            end = len(pending)
            break
        pending += chunk
    raw = bytes(pending[:end])
    del pending[: end + 1]
    try:
        return raw.decode("utf-8").removesuffix("\r")
    except UnicodeDecodeError as exc:
        return exc


async def _stdin_lines(say: Callable[[str], None], fd: int = 0) -> AsyncIterator[str]:
    """The terminal's lines, each read when the chat asks for it (after a "> " prompt).

    A line is awaited in a daemon thread of its own that reads the file descriptor itself: in
    asyncio's executor (``input`` in ``asyncio.to_thread``) Ctrl-C waited for one more line, since
    ``asyncio.run`` joins its executor's threads, and ``sys.stdin`` held by a thread that Python
    leaves behind aborts Python's exit.
    """
    loop = asyncio.get_running_loop()
    asked: queue.SimpleQueue[asyncio.Future[Read]] = queue.SimpleQueue()

    def reader() -> None:
        pending = bytearray()
        while True:
            wanted = asked.get()
            line = _read_line(fd, pending)
            with contextlib.suppress(RuntimeError):  # the chat has ended: its loop is closed
                loop.call_soon_threadsafe(_answer, wanted, line)
            if line is None:
                return

    threading.Thread(target=reader, name="chat-stdin", daemon=True).start()
    while True:
        print("> ", end="", flush=True)  # noqa: T201 - the prompt
        wanted: asyncio.Future[Read] = loop.create_future()
        asked.put(wanted)
        line = await wanted
        if line is None:
            return
        if isinstance(line, UnicodeDecodeError):
            say(NOT_UTF8)
            continue
        yield line


def _answer(future: asyncio.Future[Read], line: Read) -> None:
    if not future.done():  # not cancelled by Ctrl-C meanwhile
        future.set_result(line)


async def _main(args: argparse.Namespace) -> None:
    from lmd_bot.config import load_settings
    from lmd_bot.db.engine import SETTING as DB_SETTING
    from lmd_bot.errors import ConfigError
    from lmd_bot.rendering import RenderMode
    from lmd_bot.services import open_core

    overrides: dict[str, Any] = {}
    if args.renderer or args.shapes:
        overrides["queue"] = {"renderer": args.renderer or "diffusion"}
    if args.db:
        overrides["db"] = {"url": args.db}
    # Chat shows every step: nobody rate-limits a terminal.
    overrides["discord"] = {"status_edit_interval_s": 1.0}
    settings = load_settings(**overrides)
    if args.shapes:
        from lmd_bot.shapes.assets import shapes_diffusion_settings

        settings = settings.model_copy(update={"diffusion": shapes_diffusion_settings(settings.diffusion)})
    try:
        core = await open_core(settings)
    except ConfigError as exc:
        if not args.db:
            raise
        # The database's refusals name the setting; here the URL came from the option.
        raise ConfigError(str(exc).replace(DB_SETTING, "--db", 1), user_message=exc.user_message) from None
    try:
        imagine = {
            "mode": RenderMode(args.mode) if args.mode else None,
            "steps": args.steps,
            "candidates": args.candidates,
        }
        say = lambda text: print(text, flush=True)  # noqa: E731, T201
        await chat(core, _stdin_lines(say), args.out, say, **imagine)
    finally:
        await core.close()


def run(args: argparse.Namespace) -> int:
    from lmd_bot.commands import check_folder
    from lmd_bot.errors import LmdError

    if args.steps is not None and not 1 <= args.steps <= 150:
        print("error: --steps must be between 1 and 150", file=sys.stderr)  # noqa: T201
        return 2
    if args.candidates is not None and not 1 <= args.candidates <= MAX_CANDIDATES:
        print(f"error: --candidates must be between 1 and {MAX_CANDIDATES}", file=sys.stderr)  # noqa: T201
        return 2
    if args.shapes and args.renderer not in (None, "diffusion"):
        msg = f"--shapes draws with the shapes models; --renderer {args.renderer} draws without them"
        raise LmdError(msg)
    check_folder(args.out, "images")  # before the database, the worker and any planner call
    asyncio.run(_main(args))
    return 0
