"""The prompt: the LMD rules, our examples (valid, covering what the issue asks), both formats."""

import re

import pytest

from lmd_bot.layout.lmd_text import read_lmd_text
from lmd_bot.layout.repair import RawObject, repair_layout
from lmd_bot.planner import prompts
from lmd_bot.planner.answer import PlannerAnswer, read_json_answer, read_lmd_answer

ALL = prompts.SCENE_EXAMPLES + prompts.EDIT_EXAMPLES


def layouts():
    yield prompts.EDIT_BASE
    for ex in ALL:
        if not isinstance(ex.answer, str):
            yield ex.answer


def test_template_has_a_version():
    assert re.fullmatch(r"lmdbot-\d+\.\d+", prompts.TEMPLATE_VERSION)


def test_scene_examples_cover_what_the_method_needs():
    layout_examples = [ex for ex in prompts.SCENE_EXAMPLES if not isinstance(ex.answer, str)]
    assert len(layout_examples) >= 8
    covered = {c for ex in layout_examples for c in ex.covers}
    assert {
        "count",
        "left-right",
        "above-below",
        "attribute",
        "negation",
        "style",
        "crowded",
        "non-english",
    } <= covered
    assert max(len(ex.answer.objects) for ex in layout_examples) >= 6  # the crowded scene


def test_edit_examples_cover_every_kind_of_edit():
    covered = {c for ex in prompts.EDIT_EXAMPLES for c in ex.covers}
    kinds = "move resize recolour add remove replace background style negation relational global reply"
    assert {*kinds.split(), "non-english"} <= covered


@pytest.mark.parametrize("layout", list(layouts()), ids=lambda layout: layout.background[:30])
def test_every_example_layout_obeys_our_own_rules(layout):
    """No example teaches something our validator would repair."""
    objects = [RawObject(o.caption, list(o.box), o.id or None) for o in layout.objects]
    result = repair_layout(objects, layout.background, layout.negative)
    assert result.notes == []
    for o in layout.objects:
        assert o.caption.isascii() and o.caption[0].islower()  # English captions, even for other languages
    assert layout.background.isascii() and layout.negative.isascii()


def test_non_english_examples_answer_in_english():
    foreign = [ex for ex in ALL if "non-english" in ex.covers]
    assert len(foreign) >= 3 and all(not ex.message.isascii() for ex in foreign)


def test_edit_examples_keep_ids_and_mark_new_objects():
    base_ids = {o.id for o in prompts.EDIT_BASE.objects}
    for ex in prompts.EDIT_EXAMPLES:
        if isinstance(ex.answer, str):
            continue
        kept = [o.id for o in ex.answer.objects if o.id]
        assert len(kept) == len(set(kept)) and set(kept) <= base_ids
        untouched = [o for o in ex.answer.objects if o in prompts.EDIT_BASE.objects]
        if "global" not in ex.covers:
            assert len(untouched) >= len(base_ids) - 2  # an edit copies the objects it does not touch


@pytest.mark.parametrize("fmt", ["json", "lmd"])
def test_system_prompt_states_the_rules_and_is_long_enough_to_cache(fmt):
    text = prompts.system_prompt(fmt, 16)
    ids_rule = "keeps its id" if fmt == "json" else "same order"
    rules = ["512x512", "[0, 0]", "One object per box", "negative prompt", "English", "At most 16 objects"]
    for rule in [*rules, ids_rule, "reply", "Never reveal"]:
        assert rule in text
    assert prompts.estimate_tokens(text) > 2 * 512
    assert prompts.system_prompt(fmt, 16) is text  # built once: byte-stable for the prompt cache
    assert "At most 5 objects" in prompts.system_prompt(fmt, 5)


def test_every_rendered_example_reads_back():
    """Each example answer, as the model sees it, is read by the same reader as a real answer."""
    for fmt, reader in (("json", read_json_answer), ("lmd", read_lmd_answer)):
        answers = re.findall(r"^Answer: (.*?)(?=\n\n|\Z)", prompts.system_prompt(fmt, 16), re.S | re.M)
        assert len(answers) == len(ALL) + 1
        for text in answers:
            answer = reader(text)
            assert answer.reply or answer.background
            if fmt == "json":
                PlannerAnswer.model_validate_json(text)
            elif answer.reply is None:
                assert read_lmd_text(text).notes == []
