"""Test doubles for the service layer: a scripted planner and a notifier that records.

The planner follows a few literal rules so tests can script scenes in plain words; everything
else (database, queue, worker process, renderer) in the service tests is real.
"""

from __future__ import annotations

import asyncio
import itertools
import re

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner.base import PlanResult, PlanRound
from lmd_bot.services.views import FailureView, ResultView, StatusView


def _layout(objects: list[dict], background: str = "a plain room", negative: str = "") -> SceneLayout:
    return SceneLayout.model_validate({"objects": objects, "background": background, "negative": negative})


class ScriptedPlanner:
    """``plan``: one object per comma-separated phrase, in a row. ``revise``: "add X", "remove X",
    "move X right|left", "make it night", "recolor X to Y"; a question gets a reply; "fail" raises
    PlannerError and "busy" PlannerBusyError."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[PlanRound] | None, str]] = []
        self.delay_s = 0.0

    async def plan(self, prompt: str) -> PlanResult:
        self.calls.append(("plan", None, prompt))
        await asyncio.sleep(self.delay_s)
        if prompt.endswith("?"):
            return PlanResult(reply="I draw scenes: describe one.")
        if "fail" in prompt:
            raise PlannerError("scripted failure")
        phrases = [p.strip() for p in prompt.split(",") if p.strip()]
        objects = [
            {"id": i, "caption": phrase, "box": [16 + (i - 1) * 120, 200, 100, 100]}
            for i, phrase in enumerate(phrases[:4], start=1)
        ]
        return PlanResult(layout=_layout(objects))

    async def revise(self, history: list[PlanRound], instruction: str) -> PlanResult:
        self.calls.append(("revise", list(history), instruction))
        await asyncio.sleep(self.delay_s)
        text = instruction.lower()
        if text.endswith("?"):
            return PlanResult(reply="I can add, remove and move objects.")
        if text == "busy":
            raise PlannerBusyError("scripted overload")
        current = history[-1].layout
        objects = [o.model_dump() for o in current.objects]
        background = current.background
        if m := re.fullmatch(r"add (.+)", text):
            objects.append({"id": current.next_id(), "caption": m[1], "box": [300, 50, 80, 80]})
        elif m := re.fullmatch(r"remove (.+)", text):
            objects = [o for o in objects if m[1] not in o["caption"]]
        elif m := re.fullmatch(r"move (.+) (right|left)", text):
            for o in objects:
                if m[1] in o["caption"]:
                    x, y, w, h = o["box"]
                    o["box"] = [min(512 - w, x + 64) if m[2] == "right" else max(0, x - 64), y, w, h]
        elif m := re.fullmatch(r"recolor (.+) to (.+)", text):
            for o in objects:
                if m[1] in o["caption"]:
                    o["caption"] = m[2]
        elif text == "make it night":
            background = f"{background} at night"
        else:
            raise PlannerError(f"unscripted instruction {instruction!r}")
        return PlanResult(layout=_layout(objects, background, current.negative))

    async def aclose(self) -> None:
        pass


class RecordingNotifier:
    """Records every update; message ids are handed out like Discord's (new status messages get a
    fresh id, edits keep theirs)."""

    def __init__(self) -> None:
        self.updates: list[StatusView | ResultView | FailureView] = []
        self._ids = itertools.count(9000)
        self.changed = asyncio.Condition()
        self.gone_threads: set[int] = set()

    async def _record(self, view) -> int:
        from lmd_bot.services.notifier import DestinationGoneError

        if view.scene.thread_id in self.gone_threads:
            raise DestinationGoneError(view.scene.thread_id)
        async with self.changed:
            self.updates.append(view)
            self.changed.notify_all()
        return view.job.status_message_id or next(self._ids)

    async def show_status(self, view: StatusView) -> int:
        return await self._record(view)

    async def show_result(self, view: ResultView) -> int:
        return await self._record(view)

    async def show_failure(self, view: FailureView) -> int:
        return await self._record(view)

    def for_job(self, job_id: int) -> list:
        return [u for u in self.updates if u.job.id == job_id]

    async def wait_for(self, predicate, timeout: float = 20.0):
        """The first update matching ``predicate`` (waiting for it)."""

        async def find():
            async with self.changed:
                while True:
                    for u in self.updates:
                        if predicate(u):
                            return u
                    await self.changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def result_of(self, job_id: int, timeout: float = 20.0):
        return await self.wait_for(
            lambda u: (
                (u.job.id == job_id and isinstance(u, ResultView | FailureView))
                or (u.job.id == job_id and isinstance(u, StatusView) and u.state == "cancelled")
            ),
            timeout,
        )
