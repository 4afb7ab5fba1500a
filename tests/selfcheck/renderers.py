"""A renderer for the service tests, run in the real GPU worker process: its image comes with a
self-check report saying object 1 is still missing."""

from __future__ import annotations

from PIL import Image

from lmd_bot.rendering import RenderOutput
from lmd_bot.selfcheck.report import CheckReport, Finding, Problem


class MissingOne:
    def render(self, request, progress=None, should_cancel=None):
        obj = request.layout.sorted_objects()[0]
        report = CheckReport(
            detector="OWLv2",
            objects=len(request.layout.objects),
            found=len(request.layout.objects) - 1,
            retries=2,
            max_retries=2,
            remaining=(Finding(problem=Problem.MISSING, caption=obj.caption, object_id=obj.id),),
            seconds=0.5,
        )
        image = Image.new("RGB", (request.layout.width, request.layout.height), (90, 120, 160))
        return RenderOutput(image=image, seconds=0.01, stats={"check_retries": 2.0}, check=report)


def missing_one() -> MissingOne:
    return MissingOne()
