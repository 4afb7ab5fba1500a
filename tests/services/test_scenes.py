"""The scene flow through the service layer, with no Discord: plan, render, follow-ups, rerolls,
undo and branches, on a real SQLite file, a real worker process and the preview renderer."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.guard import BannedContentError, RateLimitedError
from lmd_bot.rendering import RenderMode
from lmd_bot.scenes.models import JobStatus, RoundKind
from lmd_bot.services import PlanView, ReplyView, ResultView, SettingsChange, StatusView, UndoView, Voice
from lmd_bot.services.errors import NothingToUndoError, NotOwnerError, UnchangedLayoutError
from lmd_bot.testing import ScriptedPlanner
from tests.services.conftest import ALICE, BOB, running_core


async def _first_round(app, notes, actor=ALICE, prompt="a red apple, a blue cup", **kw):
    """/imagine through the recording presenter: the plan is shown, then its render queued."""
    plan = await app.scenes.imagine(actor, prompt, notes, **kw)
    assert isinstance(plan, PlanView) and plan.job is not None
    return plan, plan.job


async def test_imagine_plans_renders_and_reports_each_stage(core):
    """/imagine: the plan comes back at once; the job is queued, runs, and its result carries the
    image, the overlay, the seed and the round; the image is on disk and the job is done."""
    app, notes = core
    plan, job = await _first_round(app, notes, seed=4242, mode=RenderMode.SD, steps=3)
    assert [o.caption for o in plan.round.layout.objects] == ["a red apple", "a blue cup"]
    assert plan.round.number == 1 and plan.scene.seed == 4242 and plan.changes is None
    assert Image.open(io.BytesIO(plan.overlay_png)).size[0] == 512
    result = await notes.result_of(job.id)
    assert isinstance(result, ResultView)
    assert result.job.seed == 4242 and result.job.mode == RenderMode.SD and result.job.steps == 3
    assert result.round.number == 1 and not result.spoiler and not result.withheld
    assert Image.open(io.BytesIO(result.image_png)).size == (512, 512)
    assert result.overlay_png and result.overlay_png != result.image_png
    states = [u.state for u in notes.for_job(job.id) if isinstance(u, StatusView)]
    assert states[0] == "queued" and "running" in states
    stored = await app.repo.job(job.id)
    assert stored.status == JobStatus.DONE and Path(stored.image_path).read_bytes() == result.image_png
    assert [type(v) for v in notes.shown[:2]] == [PlanView, StatusView]  # the plan shown first
    scene = await app.scenes.scene_for_thread(plan.scene.thread_id)
    assert scene is not None and scene.id == plan.scene.id and scene.plan_message_id is not None
    ref = await app.repo.message(scene.plan_message_id)
    assert ref is not None and ref.round_id == plan.round.id


async def test_instruction_revises_the_head_and_renders_with_the_scene_seed(core):
    """A follow-up sends the branch to the planner, says what changed, and renders the new round
    with the same seed, so unchanged objects stay put."""
    app, notes = core
    plan, job = await _first_round(app, notes, seed=7)
    await notes.result_of(job.id)
    revised = await app.scenes.instruct(ALICE, plan.scene.id, "move apple right", notes)
    assert isinstance(revised, PlanView)
    assert revised.changes == "moved: a red apple"
    assert revised.round.parent_id == plan.round.id and revised.round.number == 2
    assert revised.scene.head_round_id == revised.round.id
    planner = app.planner
    kind, history, text = planner.calls[-1]
    assert kind == "revise" and text == "move apple right"
    assert [h.instruction for h in history] == ["a red apple, a blue cup"]
    result = await notes.result_of(revised.job.id)
    assert result.job.seed == 7 and result.round.number == 2


async def test_question_gets_a_reply_and_changes_nothing(core):
    app, notes = core
    plan, _ = await _first_round(app, notes)
    reply = await app.scenes.instruct(ALICE, plan.scene.id, "what can you do?", notes)
    assert isinstance(reply, ReplyView) and "add" in reply.text
    assert reply.by is Voice.PLANNER  # shown as written, pinging nobody
    assert len(await app.repo.rounds(plan.scene.id)) == 1
    assert isinstance(await app.scenes.imagine(ALICE, "hello?", notes), ReplyView)


async def test_reroll_branches_a_new_round_with_a_new_seed(core):
    """🔄 renders the same layout with a new seed as a child round; the new seed becomes the
    scene's, so the next edit keeps it."""
    app, notes = core
    plan, job = await _first_round(app, notes, seed=11)
    first = await notes.result_of(job.id)
    assert first.job.status_message_id is not None  # the status message became the result
    rerolled = await app.scenes.reroll_message(ALICE, first.job.status_message_id)
    assert rerolled is not None
    result = await notes.result_of(rerolled.id)
    assert result.round.kind == RoundKind.REROLL and result.round.parent_id == plan.round.id
    assert result.round.layout == plan.round.layout
    assert result.job.seed == 1000 != 11  # the test's seed source hands out 1000, 1001, …
    scene = await app.repo.scene(plan.scene.id)
    assert scene.seed == 1000 and scene.head_round_id == result.round.id
    assert await app.scenes.reroll_message(ALICE, 123456) is None  # not a message of ours


async def test_undo_goes_back_and_the_next_edit_branches_from_there(core):
    """Rounds form a tree: after undo the planner sees the path to the round undone to, without
    the abandoned branch (and without rerolls)."""
    app, notes = core
    plan, job = await _first_round(app, notes, seed=5)
    await notes.result_of(job.id)
    night = await app.scenes.instruct(ALICE, plan.scene.id, "make it night", notes)
    await notes.result_of(night.job.id)
    undone = await app.scenes.instruct(ALICE, plan.scene.id, "Undo", notes)  # the word works like the button
    assert isinstance(undone, UndoView) and undone.round.id == plan.round.id
    assert undone.result is not None and undone.result.reshown and undone.result.image_png
    assert (await app.repo.scene(plan.scene.id)).head_round_id == plan.round.id
    added = await app.scenes.instruct(ALICE, plan.scene.id, "add a cat", notes)
    assert isinstance(added, PlanView) and added.round.parent_id == plan.round.id
    _, history, _ = app.planner.calls[-1]
    assert [h.instruction for h in history] == ["a red apple, a blue cup"]
    assert "night" not in added.round.layout.background
    # Branch from the night round explicitly (the Edit button on its result).
    branched = await app.scenes.instruct(
        ALICE, plan.scene.id, "add a dog", notes, base_round_id=night.round.id
    )
    _, history, _ = app.planner.calls[-1]
    assert [h.instruction for h in history] == ["a red apple, a blue cup", "make it night"]
    assert branched.round.parent_id == night.round.id and "night" in branched.round.layout.background


async def test_undo_on_the_first_round_says_so(core):
    app, notes = core
    plan, _ = await _first_round(app, notes)
    with pytest.raises(NothingToUndoError):
        await app.scenes.undo(ALICE, plan.scene.id, notes)


async def test_only_the_owner_edits_unless_shared_or_the_server_allows(core):
    app, notes = core
    plan, _ = await _first_round(app, notes)
    with pytest.raises(NotOwnerError):
        await app.scenes.instruct(BOB, plan.scene.id, "add a cat", notes)
    with pytest.raises(NotOwnerError):
        await app.scenes.reroll(BOB, plan.round.id)
    assert len(app.planner.calls) == 1  # refused before the planner was asked
    await app.scenes.share(ALICE, plan.scene.id, True)
    assert isinstance(await app.scenes.instruct(BOB, plan.scene.id, "add a cat", notes), PlanView)
    await app.scenes.share(ALICE, plan.scene.id, False)
    with pytest.raises(NotOwnerError):
        await app.scenes.instruct(BOB, plan.scene.id, "add a dog", notes)
    from tests.services.conftest import ADMIN

    await app.scenes.update_server_settings(ADMIN, SettingsChange(editors="everyone"))
    assert isinstance(await app.scenes.instruct(BOB, plan.scene.id, "add a dog", notes), PlanView)


async def test_planner_failures_leave_no_scene(tmp_path):
    planner = ScriptedPlanner()
    async with running_core(tmp_path, planner=planner) as (app, notes):
        with pytest.raises(PlannerError) as err:
            await app.scenes.imagine(ALICE, "fail please", notes)
        assert err.value.user_message.startswith("I couldn't lay this out")
        plan, _ = await _first_round(app, notes)
        with pytest.raises(PlannerBusyError) as busy:
            await app.scenes.instruct(ALICE, plan.scene.id, "busy", notes)
        assert "busy" in busy.value.user_message
        assert len(await app.repo.rounds(plan.scene.id)) == 1
        assert plan.scene.id == 1  # the failed /imagine stored nothing


async def test_ban_list_applies_to_prompts_instructions_and_the_planners_captions(tmp_path):
    guard = {"banned_words": ["gore"], "banned_patterns": [r"\bblood\w*"]}
    async with running_core(tmp_path, guard=guard) as (app, notes):
        with pytest.raises(BannedContentError) as err:
            await app.scenes.imagine(ALICE, "a GORE scene", notes)
        assert err.value.user_message == "That prompt isn't allowed here."
        with pytest.raises(BannedContentError):
            await app.scenes.check_imagine(ALICE, "bloodied knight")
        plan, _ = await _first_round(app, notes, prompt="a knight")
        with pytest.raises(BannedContentError):
            await app.scenes.instruct(ALICE, plan.scene.id, "add gore", notes)
        # The planner writes a banned caption on its own: refused, nothing stored.
        with pytest.raises(BannedContentError):
            await app.scenes.instruct(ALICE, plan.scene.id, "recolor knight to bloody knight", notes)
        assert len(await app.repo.rounds(plan.scene.id)) == 1


async def test_rate_limit_per_user(tmp_path):
    async with running_core(tmp_path, guard={"rate_limit_count": 2, "rate_limit_window_s": 60}) as (
        app,
        notes,
    ):
        await app.scenes.imagine(ALICE, "a cat", notes)
        await app.scenes.imagine(ALICE, "a dog", notes)
        with pytest.raises(RateLimitedError) as err:
            await app.scenes.imagine(ALICE, "a cow", notes)
        assert "try again in" in err.value.user_message
        assert isinstance(await app.scenes.imagine(BOB, "a cow", notes), PlanView)


async def test_too_long_and_empty_text_are_refused_before_planning(core):
    app, notes = core
    with pytest.raises(Exception) as err:
        await app.scenes.imagine(ALICE, "x" * 5000, notes)
    assert "too long" in err.value.user_message
    with pytest.raises(Exception) as err:
        await app.scenes.imagine(ALICE, "   ", notes)
    assert "empty" in err.value.user_message
    assert app.planner.calls == []


async def test_layout_json_is_the_rounds_layout(core):
    app, notes = core
    plan, _ = await _first_round(app, notes)
    text = await app.scenes.layout_json(plan.round.id)
    assert '"caption": "a red apple"' in text and '"box": [' in text


async def test_an_edit_that_leaves_the_layout_as_it_was_queues_no_identical_render(core):
    """The planner (or the user's edit box) answering with the very layout of the round: with the
    scene's seed the render would be the same picture again, a queue slot and minutes of GPU for
    nothing. The user is told so, and nothing is stored."""
    app, notes = core
    plan, job = await _first_round(app, notes, seed=7)
    await notes.result_of(job.id)
    shown_before = len(notes.shown)
    with pytest.raises(UnchangedLayoutError) as unchanged:
        await app.scenes.instruct(ALICE, plan.scene.id, "remove zebra", notes)  # there is none
    assert "same picture" in unchanged.value.user_message and "reroll" in unchanged.value.user_message
    with pytest.raises(UnchangedLayoutError):
        await app.scenes.edit_layout(ALICE, plan.round.id, plan.round.layout.model_dump_json(), notes)
    assert len(await app.repo.rounds(plan.scene.id)) == 1
    assert (await app.repo.scene(plan.scene.id)).head_round_id == plan.round.id
    assert len(notes.shown) == shown_before  # no plan shown, no job queued
    # A real edit still goes through.
    moved = await app.scenes.instruct(ALICE, plan.scene.id, "move apple right", notes)
    assert isinstance(moved, PlanView) and moved.round.number == 2
