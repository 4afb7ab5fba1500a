"""The self-check's report travels from the GPU worker to the reply: through the worker's pipe
and the queue's JSON, to the result view, its one line in the reply, and the overlay's marks."""

import io

from PIL import Image

from cogs._format import result_embeds
from lmd_bot.jobs.models import EVENT_ADAPTER, JobDone
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.overlay import draw_overlay
from lmd_bot.selfcheck.report import CheckReport, Finding, Problem
from lmd_bot.services import PlanView, ResultView
from tests.services.conftest import ALICE, running_core

REPORT = CheckReport(
    detector="OWLv2",
    objects=2,
    found=1,
    retries=1,
    max_retries=2,
    fixed=(),
    remaining=(Finding(problem=Problem.MISPLACED, caption="a red cup", object_id=2),),
)


def test_the_report_crosses_the_queue_as_json():
    event = JobDone(job_id=1, png=b"\x89PNG", seconds=1.0, check=REPORT)
    back = EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(event))
    assert back.check == REPORT and back.check.missing_ids == (2,)
    unchecked = JobDone(job_id=1, png=b"", seconds=1)
    assert EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(unchecked)).check is None


async def test_the_reply_says_what_the_check_did_and_the_overlay_marks_the_missing_object(tmp_path):
    renderer = RendererSpec(factory="tests.selfcheck.renderers:missing_one")
    async with running_core(tmp_path, renderer=renderer) as (app, notes):
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        assert isinstance(plan, PlanView) and plan.job is not None
        result = await notes.result_of(plan.job.id)
    assert isinstance(result, ResultView)
    layout = result.round.layout
    first = layout.sorted_objects()[0]
    assert result.check.missing_ids == (first.id,)
    assert result.check.line() == (
        f"self-check: {len(layout.objects) - 1}/{len(layout.objects)} objects found; "
        f"still missing: the {first.caption.split(' ', 1)[1]}; 2 retries did not fix it"
    )
    image = Image.open(io.BytesIO(result.image_png)).convert("RGB")
    assert result.overlay_png == draw_overlay(layout, image, missing=(first.id,))
    assert result.overlay_png != draw_overlay(layout, image)
    embed = result_embeds(result)[0]
    assert {f.name: f.value for f in embed.fields}["Self-check"] == result.check.line()
