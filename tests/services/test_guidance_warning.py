"""A NaN in guidance is never silent: the worker's count reaches the user's reply."""

from cogs._format import result_embeds
from lmd_bot.services import PlanView, ResultView
from tests.jobs.renderers import spec
from tests.services.conftest import ALICE, running_core


async def test_non_finite_guidance_is_said_in_the_reply(tmp_path):
    async with running_core(tmp_path, renderer=spec("unstable_guidance")) as (app, notes):
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        assert isinstance(plan, PlanView) and plan.job is not None
        result = await notes.result_of(plan.job.id)
    assert isinstance(result, ResultView) and result.guidance_nonfinite == 2
    fields = {f.name: f.value for f in result_embeds(result)[0].fields}
    assert fields["⚠️ Guidance"] == result.guidance_warning()
    assert "NaN" in fields["⚠️ Guidance"] and "2x" in fields["⚠️ Guidance"]


async def test_a_clean_render_carries_no_warning(tmp_path):
    async with running_core(tmp_path) as (app, notes):
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        result = await notes.result_of(plan.job.id)
    assert result.guidance_nonfinite == 0 and result.guidance_warning() is None
    assert "⚠️ Guidance" not in {f.name for f in result_embeds(result)[0].fields}
