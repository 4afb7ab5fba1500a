"""The shapes benchmark: the LMD benchmark's tasks and templates, a template planner that is right."""

from collections import Counter

from lmd_bot.eval.predicates import NamedBox, check
from lmd_bot.eval.prompts import Task
from lmd_bot.shapes.benchmark import plan_layout, shapes_prompts, subset


def test_a_hundred_prompts_per_task_in_the_reference_templates():
    prompts = shapes_prompts()
    assert Counter(p.task for p in prompts) == {task: 100 for task in Task}
    assert [p.index for p in prompts] == list(range(400))
    texts = {p.task: p.prompt for p in prompts}
    assert texts[Task.NEGATION].endswith(" without diamonds")
    assert prompts[100].prompt.endswith(" with one circle")
    assert prompts[120].prompt.endswith(" with two circles")
    assert " and a" in texts[Task.ATTRIBUTION]
    assert " on the " in texts[Task.SPATIAL]


def test_template_layouts_pass_their_own_checks():
    """Stage 1 is perfect by construction: every task's check passes on the planned boxes."""
    for prompt in shapes_prompts():
        layout = plan_layout(prompt)
        boxes = [NamedBox(name=o.caption, box=(o.box.x, o.box.y, o.box.w, o.box.h)) for o in layout.objects]
        assert check(prompt, boxes).passed, (prompt.prompt, layout.objects)
        for a in layout.objects:
            assert a.box.inside(64, 64)
            for b in layout.objects:
                if a.id < b.id:  # boxes never overlap: detection can tell the objects apart
                    assert (
                        a.box.x1 <= b.box.x
                        or b.box.x1 <= a.box.x
                        or a.box.y1 <= b.box.y
                        or b.box.y1 <= a.box.y
                    )


def test_subset_takes_each_task_evenly():
    chosen = subset(shapes_prompts(), 4)
    assert Counter(p.task for p in chosen) == {task: 4 for task in Task}
