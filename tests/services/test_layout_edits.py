"""Editing a layout by hand through the scene service: no planner call; read, repaired and
numbered like a planner answer; a new round rendered with the scene's seed."""

from __future__ import annotations

import codecs

import pytest

from lmd_bot.errors import LayoutError
from lmd_bot.layout.lmd_text import format_lmd_text
from lmd_bot.scenes.models import RoundKind
from lmd_bot.services import AttachedFile, PlanView, ResultView
from lmd_bot.services.errors import NotOwnerError
from lmd_bot.services.scenes import LAYOUT_INSTRUCTION
from tests.services.conftest import ALICE, BOB, running_core


async def _scene(app, notes):
    plan = await app.scenes.imagine(ALICE, "a red apple, a blue cup", notes, seed=77)
    assert isinstance(plan, PlanView)
    await notes.result_of(plan.job.id)
    return plan


async def test_a_hand_edited_layout_with_a_bad_box_becomes_the_next_round(core):
    app, notes = core
    plan = await _scene(app, notes)
    shown = await app.scenes.layout_view(ALICE, plan.round.id)
    assert shown.editable and shown.edit_text == shown.json_text
    text = (
        shown.json_text.replace('"a blue cup"', '"a green cup"')
        .replace("[136, 200, 100, 100]", "[300, 260, 100, 100]")
        .replace('"objects": [\n', '"objects": [\n    {"caption": "a cat", "box": [10, 10, -5, 40]},\n')
    )
    edited = await app.scenes.edit_layout(ALICE, plan.round.id, text, notes)
    assert app.planner.calls == [("plan", None, "a red apple, a blue cup")]  # no LLM call
    assert isinstance(edited, PlanView) and edited.job is not None
    round_ = edited.round
    assert round_.kind == RoundKind.LAYOUT and round_.parent_id == plan.round.id and round_.number == 2
    assert [(o.id, o.caption) for o in round_.layout.objects] == [(1, "a red apple"), (2, "a green cup")]
    assert round_.layout.object(2).box.as_list() == [300, 260, 100, 100]
    assert edited.notes == ["dropped 'a cat': its box has no area (w=-5, h=40)"]
    assert edited.changes == "changed: a blue cup → a green cup; moved: a green cup"
    shown_plans = [v for v in notes.shown if isinstance(v, PlanView) and v.round.id == round_.id]
    assert shown_plans[0].notes == edited.notes  # the plan, with its notes, is shown like a planner's
    result = await notes.result_of(edited.job.id)
    assert isinstance(result, ResultView) and result.job.seed == 77 and result.round.id == round_.id
    # The planner's next revision starts from the hand-written round.
    await app.scenes.instruct(ALICE, plan.scene.id, "make it night", notes)
    _, history, _ = app.planner.calls[-1]
    assert history[-1].instruction == LAYOUT_INSTRUCTION and history[-1].layout == round_.layout


async def test_lmd_text_works_too_and_ids_follow_the_objects(core):
    app, notes = core
    plan = await _scene(app, notes)
    text = format_lmd_text(plan.round.layout).replace("[136, 200, 100, 100]", "[150, 210, 100, 100]")
    edited = await app.scenes.edit_layout(ALICE, plan.round.id, text, notes)
    assert [(o.id, o.caption) for o in edited.round.layout.objects] == [(1, "a red apple"), (2, "a blue cup")]
    assert edited.changes == "moved: a blue cup" and edited.notes == []


async def test_what_is_no_layout_changes_nothing_and_says_what_to_fix(core):
    app, notes = core
    plan = await _scene(app, notes)
    with pytest.raises(LayoutError) as err:
        await app.scenes.edit_layout(ALICE, plan.round.id, '{"objects": [', notes)
    assert "JSON is malformed" in err.value.user_message
    assert len(await app.repo.rounds(plan.scene.id)) == 1
    assert (await app.repo.scene(plan.scene.id)).head_round_id == plan.round.id


async def test_only_editors_see_the_edit_box_and_may_edit(core):
    app, notes = core
    plan = await _scene(app, notes)
    assert not (await app.scenes.layout_view(BOB, plan.round.id)).editable
    with pytest.raises(NotOwnerError):
        await app.scenes.edit_layout(BOB, plan.round.id, plan.round.layout.model_dump_json(), notes)
    assert len(await app.repo.rounds(plan.scene.id)) == 1


def _file(name: str, data: bytes) -> AttachedFile:
    async def read() -> bytes:
        return data

    return AttachedFile(name=name, size=len(data), read=read)


async def test_a_layout_file_saved_as_utf16_is_read_and_latin1_is_named(core):
    """Windows Notepad's "Unicode" is UTF-16 with a byte-order mark: text, not binary data."""
    app, notes = core
    plan = await _scene(app, notes)
    text = format_lmd_text(plan.round.layout).replace("a blue cup", "a blue café cup")
    for data in (
        text.encode("utf-16"),
        codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
        text.encode("utf-32"),
    ):
        edited = await app.scenes.edit_layout_file(ALICE, plan.scene.id, _file("layout.txt", data), notes)
        assert "a blue café cup" in [o.caption for o in edited.round.layout.objects]
        await app.scenes.undo(ALICE, plan.scene.id, notes)
    with pytest.raises(LayoutError) as err:
        await app.scenes.edit_layout_file(
            ALICE, plan.scene.id, _file("café.txt", text.encode("latin-1")), notes
        )
    assert "not UTF-8" in err.value.user_message and "save it as UTF-8" in err.value.user_message
    assert "binary" not in err.value.user_message
    with pytest.raises(LayoutError) as err:
        await app.scenes.edit_layout_file(
            ALICE, plan.scene.id, _file("cat.png", b"\x89PNG\r\n\x1a\n\0\0"), notes
        )
    assert "binary data" in err.value.user_message


async def test_limits_raised_above_the_defaults_hold_when_the_round_is_read_and_rendered(tmp_path):
    """The configured limits are checked where a layout comes in; read back from the database or
    the queue it was checked already (an operator may change the limits since)."""
    async with running_core(tmp_path, layout={"max_prompt_chars": 2000, "max_caption_chars": 300}) as (
        app,
        notes,
    ):
        plan = await _scene(app, notes)
        long_caption = "a blue cup with " + "a very fine painted pattern, " * 9 + "on a saucer"
        text = (
            (await app.scenes.layout_json(plan.round.id))
            .replace('"a blue cup"', f'"{long_caption}"')
            .replace('"negative": ""', f'"negative": "{"people, " * 100}"')
        )
        edited = await app.scenes.edit_layout(ALICE, plan.round.id, text, notes)
        assert len(edited.round.layout.negative) > 400 and len(edited.round.layout.objects[1].caption) > 120
        shown = await app.scenes.layout_view(ALICE, edited.round.id)  # read back from the database
        assert long_caption in shown.json_text
        result = await notes.result_of(edited.job.id)
        assert isinstance(result, ResultView), result  # the worker read the request too


async def test_layout_typos_refused_as_no_layout_do_not_use_up_the_rate_limit(tmp_path):
    """Fixing a typo in the edit box three times used up the user's requests: each refused text
    counted like a render. Only an edit that becomes a round counts."""
    async with running_core(tmp_path, guard={"rate_limit_count": 2, "rate_limit_window_s": 60}) as (
        app,
        notes,
    ):
        plan = await _scene(app, notes)  # one request of two
        text = format_lmd_text(plan.round.layout).replace("[136, 200, 100, 100]", "[150, 210, 100, 100]")
        for _ in range(3):
            with pytest.raises(LayoutError):
                await app.scenes.edit_layout(ALICE, plan.round.id, text.replace("[", "{", 1) + "{", notes)
        edited = await app.scenes.edit_layout(ALICE, plan.round.id, text, notes)
        assert edited.round.number == 2
