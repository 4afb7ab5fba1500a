"""The 400-prompt set: size, order, seeds and exact prompts computed from section 7.1's rules."""

import numpy as np
import pytest

from lmd_bot.eval.prompts import COLORS, OBJECTS, PREFIX, Task, lmd_benchmark_prompts


def test_prompt_set_has_400_prompts_in_task_order():
    prompts = lmd_benchmark_prompts()
    assert len(prompts) == 400
    assert [p.index for p in prompts] == list(range(400))
    assert [p.seed for p in prompts] == list(range(400))
    tasks = [p.task for p in prompts]
    assert (
        tasks
        == [Task.NEGATION] * 100 + [Task.NUMERACY] * 100 + [Task.ATTRIBUTION] * 100 + [Task.SPATIAL] * 100
    )
    assert all(
        p.prompt.startswith(PREFIX + " with" if p.task != Task.NEGATION else PREFIX + " without")
        for p in prompts
    )


def test_negation_prompts_repeat_each_class_ten_times():
    prompts = lmd_benchmark_prompts()
    assert prompts[0].prompt == "A realistic photo of a scene without backpacks"
    assert prompts[9].prompt == prompts[0].prompt
    assert prompts[10].prompt == "A realistic photo of a scene without books"
    assert prompts[99].prompt == "A realistic photo of a scene without laptops"
    assert prompts[0].facts.object == "backpack" and prompts[0].facts.count == 0


def test_numeracy_prompts_are_number_major_with_two_repeats():
    prompts = lmd_benchmark_prompts()
    assert prompts[100].prompt == "A realistic photo of a scene with one backpack"
    assert prompts[101].prompt == prompts[100].prompt
    assert prompts[102].prompt == "A realistic photo of a scene with one book"
    assert prompts[120].prompt == "A realistic photo of a scene with two backpacks"
    assert prompts[199].prompt == "A realistic photo of a scene with five laptops"
    assert (prompts[148].facts.object, prompts[148].facts.count) == ("car", 3)


def test_attribution_prompts_follow_the_seeded_draws():
    prompts = lmd_benchmark_prompts()
    # Seed 0: worked out from the legacy Mersenne Twister.
    assert prompts[200].prompt == "A realistic photo of a scene with a blue dog and a white bowl"
    assert prompts[202].prompt == "A realistic photo of a scene with a blue book and an orange chair"
    # A prompt quoted verbatim in third-party work on this benchmark.
    assert prompts[236].prompt == "A realistic photo of a scene with a red dog and a gray laptop"
    for i in range(100):
        np.random.seed(i)  # the reference's way, global generator and all
        c1, c2 = np.random.choice(list(COLORS), 2, replace=False)
        o1, o2 = np.random.choice(np.array(OBJECTS, dtype=object), 2, replace=False)
        facts = prompts[200 + i].facts
        assert facts.colors == (c1, c2) and facts.objects == (o1, o2)
    assert prompts[202].facts.phrases == ("a blue book", "an orange chair")


def test_spatial_prompts_draw_four_pairs_per_seed():
    prompts = lmd_benchmark_prompts()
    pairs = [("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top")]
    for seed in (0, 7, 24):
        np.random.seed(seed)
        for k, (loc1, loc2) in enumerate(pairs):
            o1, o2 = np.random.choice(np.array(OBJECTS, dtype=object), 2, replace=False)
            item = prompts[300 + 4 * seed + k]
            expected = f"{PREFIX} with a {o1} on the {loc1} and a {o2} on the {loc2}"
            assert item.prompt == expected
            assert item.facts.locations == (loc1, loc2)
            assert item.facts.phrases == (f"a {o1}", f"a {o2}")


@pytest.mark.parametrize(
    ("index", "queries"),
    [
        (0, ["a photo of a backpack"]),
        (148, ["a photo of a car"]),
        (202, ["a photo of a blue book", "a photo of an orange chair"]),
    ],
)
def test_detector_queries_use_the_reference_wording(index, queries):
    assert lmd_benchmark_prompts()[index].detector_queries() == queries


def test_generating_the_set_leaves_numpys_global_generator_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    lmd_benchmark_prompts.cache_clear()
    lmd_benchmark_prompts()
    assert np.random.rand() == expected


def test_scoring_layouts_imports_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = (
        "import sys, lmd_bot.eval.layouts, lmd_bot.eval.report, lmd_bot.eval.planning; "
        "import lmd_bot.eval.generate; "
        "import lmd_bot.eval.images, lmd_bot.eval.detector, lmd_bot.commands.eval; "
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
