"""Doubles for driving the service layer without an LLM or Discord: a scripted planner, and a
notifier (both halves of the notifier port) that records what people would be shown.

One set, shared by the tests, ``docs/pictures.py`` and ``lmd-bot bench bot``. It lives in the
package, not under ``tests/``, because the benchmark command and the docs script run from an
installed package without pytest. Everything else those callers use (database, queue, worker
process, renderer) is the real thing.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.layout.canvas import SQUARE_512, Canvas
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner.base import PlanResult, PlanRound
from lmd_bot.services.notifier import DestinationGoneError
from lmd_bot.services.views import (
    FailureView,
    PlanShown,
    PlanView,
    ReplyView,
    ResultView,
    StatusView,
    UndoView,
)

Revision = Callable[[SceneLayout], SceneLayout]


def layout_of(
    objects: list[dict], background: str = "a plain room", negative: str = "", canvas: Canvas = SQUARE_512
) -> SceneLayout:
    return SceneLayout.model_validate(
        {
            "objects": objects,
            "background": background,
            "negative": negative,
            "width": canvas.width,
            "height": canvas.height,
        }
    )


def _fit(box: list[int], old: Canvas, new: Canvas) -> list[int]:
    """A box moved to another canvas in proportion (the scripted planner's "re-plan")."""
    sx, sy = new.width / old.width, new.height / old.height
    x, y, w, h = box
    x, y, w, h = round(x * sx), round(y * sy), max(1, round(w * sx)), max(1, round(h * sy))
    return [min(x, new.width - 1), min(y, new.height - 1), min(w, new.width - x), min(h, new.height - y)]


class ScriptedPlanner:
    """A planner that follows literal rules, so callers script scenes in plain words.

    ``plan``: a prompt in ``plans`` gets that layout; otherwise one object per comma-separated
    phrase, in a row; a question gets a reply; "fail" raises PlannerError.
    ``revise``: an instruction in ``revisions`` applies that function to the last layout;
    otherwise "add X", "remove X", "move X right|left", "make it night", "recolor X to Y"; a
    question gets a reply; "busy" raises PlannerBusyError; anything else PlannerError. Asked for
    a canvas ("make it wide"), it moves the boxes to it in proportion and ignores the words.
    ``canvases`` records the canvas each call asked for.
    """

    def __init__(
        self, plans: Mapping[str, SceneLayout] | None = None, revisions: Mapping[str, Revision] | None = None
    ) -> None:
        self.plans = dict(plans or {})
        self.revisions = dict(revisions or {})
        self.calls: list[tuple[str, list[PlanRound] | None, str]] = []
        self.canvases: list[Canvas | None] = []  # the canvas each call asked for
        self.delay_s = 0.0

    async def plan(self, prompt: str, *, canvas: Canvas = SQUARE_512) -> PlanResult:
        self.calls.append(("plan", None, prompt))
        self.canvases.append(canvas)
        await asyncio.sleep(self.delay_s)
        if prompt in self.plans:
            return PlanResult(layout=self.plans[prompt])
        if prompt.endswith("?"):
            return PlanResult(reply="I draw scenes: describe one.")
        if "fail" in prompt:
            raise PlannerError("scripted failure")
        phrases = [p.strip() for p in prompt.split(",") if p.strip()]
        objects = [
            {"id": i, "caption": phrase, "box": _fit([16 + (i - 1) * 120, 200, 100, 100], SQUARE_512, canvas)}
            for i, phrase in enumerate(phrases[:4], start=1)
        ]
        return PlanResult(layout=layout_of(objects, canvas=canvas))

    async def revise(
        self, history: list[PlanRound], instruction: str, *, canvas: Canvas | None = None
    ) -> PlanResult:
        self.calls.append(("revise", list(history), instruction))
        self.canvases.append(canvas)
        await asyncio.sleep(self.delay_s)
        current = history[-1].layout
        old = Canvas(current.width, current.height)
        if canvas is not None:  # "make it wide": the same scene on the (new) canvas
            objects = [{**o.model_dump(), "box": _fit(o.box.as_list(), old, canvas)} for o in current.objects]
            return PlanResult(layout=layout_of(objects, current.background, current.negative, canvas))
        if instruction in self.revisions:
            return PlanResult(layout=self.revisions[instruction](current))
        text = instruction.lower()
        if text.endswith("?"):
            return PlanResult(reply="I can add, remove and move objects.")
        if text == "busy":
            raise PlannerBusyError("scripted overload")
        objects = [o.model_dump() for o in current.objects]
        background = current.background
        if m := re.fullmatch(r"add (.+)", text):
            objects.append(
                {"id": current.next_id(), "caption": m[1], "box": _fit([300, 50, 80, 80], SQUARE_512, old)}
            )
        elif m := re.fullmatch(r"remove (.+)", text):
            objects = [o for o in objects if m[1] not in o["caption"]]
        elif m := re.fullmatch(r"move (.+) (right|left)", text):
            for o in objects:
                if m[1] in o["caption"]:
                    x, y, w, h = o["box"]
                    o["box"] = [min(old.width - w, x + 64) if m[2] == "right" else max(0, x - 64), y, w, h]
        elif m := re.fullmatch(r"recolor (.+) to (.+)", text):
            for o in objects:
                if m[1] in o["caption"]:
                    o["caption"] = m[2]
        elif text == "make it night":
            background = f"{background} at night"
        else:
            raise PlannerError(f"unscripted instruction {instruction!r}")
        return PlanResult(layout=layout_of(objects, background, current.negative, old))

    async def aclose(self) -> None:
        pass


@dataclass(frozen=True)
class PlanPicture:
    """A plan's picture, added to its message (``shown``) after the plan's words."""

    plan: PlanView
    shown: PlanShown


JobUpdate = StatusView | ResultView | FailureView
Shown = PlanView | PlanPicture | ReplyView | UndoView | JobUpdate


class RecordingNotifier:
    """Notifier and presenter at once: records everything shown, in order. Message ids are
    handed out like Discord's (a new message gets a fresh id, an edit keeps its message's); a
    first plan opens a thread with a fresh id. A scene whose thread is in ``gone_threads`` raises
    DestinationGoneError, as a deleted thread does. ``keep=False`` only counts (benchmarks)."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.shown: list[Shown] = []
        self.counts: dict[str, int] = {}
        self._ids = itertools.count(9000)
        self._threads = itertools.count(70_000)
        self.changed = asyncio.Condition()
        self.gone_threads: set[int] = set()
        self.refused: list[JobUpdate] = []  # updates that found their thread gone

    async def _record(self, view: Shown) -> None:
        name = type(view).__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        async with self.changed:
            if self.keep:
                self.shown.append(view)
            self.changed.notify_all()

    # --- the presenter half --------------------------------------------------------------------

    async def show_plan(self, view: PlanView) -> PlanShown:
        await self._record(view)
        thread = next(self._threads) if view.scene.thread_id is None else None
        return PlanShown(message_id=next(self._ids), thread_id=thread)

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        """Recorded as a :class:`PlanPicture` after the plan it belongs to."""
        await self._record(PlanPicture(plan=view, shown=shown))

    async def show_reply(self, view: ReplyView) -> None:
        await self._record(view)

    async def show_undo(self, view: UndoView) -> int:
        await self._record(view)
        return next(self._ids)

    # --- the notifier half ---------------------------------------------------------------------

    async def _job_update(self, view: JobUpdate) -> int:
        if view.scene.thread_id in self.gone_threads:
            self.refused.append(view)
            raise DestinationGoneError(view.scene.thread_id)
        await self._record(view)
        return view.job.status_message_id or next(self._ids)

    async def show_status(self, view: StatusView) -> int:
        return await self._job_update(view)

    async def show_result(self, view: ResultView) -> int:
        return await self._job_update(view)

    async def show_failure(self, view: FailureView) -> int:
        return await self._job_update(view)

    # --- looking at what was shown -------------------------------------------------------------

    @property
    def updates(self) -> list[JobUpdate]:
        """The job updates (status, result, failure), in order."""
        return [v for v in self.shown if isinstance(v, StatusView | ResultView | FailureView)]

    @property
    def replies(self) -> list[ReplyView]:
        return [v for v in self.shown if isinstance(v, ReplyView)]

    def for_job(self, job_id: int) -> list[JobUpdate]:
        return [u for u in self.updates if u.job.id == job_id]

    @property
    def finished_jobs(self) -> int:
        """How many jobs ended with a result or a failure."""
        return self.counts.get("ResultView", 0) + self.counts.get("FailureView", 0)

    async def wait_for(self, predicate: Callable[[JobUpdate], bool], timeout: float = 20.0) -> JobUpdate:
        """The first job update (status, result, failure) matching ``predicate``, waiting for it."""

        async def find() -> JobUpdate:
            async with self.changed:
                while True:
                    for view in self.updates:
                        if predicate(view):
                            return view
                    await self.changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def result_of(self, job_id: int, timeout: float = 20.0) -> ResultView | FailureView | StatusView:
        """The job's end: its result, its failure, or its cancellation (waiting for it)."""

        def ended(view: JobUpdate) -> bool:
            return view.job.id == job_id and (not isinstance(view, StatusView) or view.state == "cancelled")

        return await self.wait_for(ended, timeout)
