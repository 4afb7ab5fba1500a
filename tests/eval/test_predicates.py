"""The benchmark's checks on hand-made boxes, for every task and its edge cases."""

from lmd_bot.eval.predicates import NamedBox, check
from lmd_bot.eval.prompts import lmd_benchmark_prompts

PROMPTS = lmd_benchmark_prompts()
NEGATION_BACKPACK = PROMPTS[0]  # without backpacks
THREE_CARS = PROMPTS[148]  # with three cars
BLUE_DOG_WHITE_BOWL = PROMPTS[200]  # with a blue dog and a white bowl
BLUE_BOOK_ORANGE_CHAIR = PROMPTS[202]  # with a blue book and an orange chair


def box(name, x=0, y=0, w=10, h=10, score=None):
    return NamedBox(name=name, box=(x, y, w, h), score=score)


def spatial_prompt(loc1):
    return next(p for p in PROMPTS if p.task == "spatial" and p.facts.locations[0] == loc1)


def test_negation_passes_without_the_object_and_fails_with_it():
    assert check(NEGATION_BACKPACK, []).passed
    assert check(NEGATION_BACKPACK, [box("a table"), box("a chair")]).passed
    verdict = check(NEGATION_BACKPACK, [box("a chair"), box("a red backpack")])
    assert not verdict.passed
    assert verdict.expected == "no backpack"
    assert verdict.found.startswith("1 × backpack")


def test_numeracy_needs_the_exact_count():
    cars = [box("a car", x=i * 100) for i in range(3)]
    assert check(THREE_CARS, cars).passed
    assert check(THREE_CARS, [*cars, box("a tree")]).passed  # other objects do not matter
    assert not check(THREE_CARS, cars[:2]).passed  # one missing
    assert not check(THREE_CARS, [*cars, box("a red car")]).passed  # one extra
    assert not check(THREE_CARS, [box("three cars")]).passed  # one box for three cars counts once


def test_numeracy_counts_substrings_as_the_reference_does():
    # No word boundary in the reference's count: "a carrot" and "a sports car" both hold "car".
    assert check(THREE_CARS, [box("a car"), box("a sports car"), box("a carrot")]).passed


def test_attribution_needs_both_coloured_phrases():
    assert check(BLUE_DOG_WHITE_BOWL, [box("a white bowl"), box("a blue dog")]).passed
    assert not check(BLUE_DOG_WHITE_BOWL, [box("a blue dog")]).passed  # missing object
    assert not check(BLUE_DOG_WHITE_BOWL, [box("a white dog"), box("a blue bowl")]).passed  # swapped
    assert not check(BLUE_DOG_WHITE_BOWL, [box("a dog"), box("a bowl")]).passed  # no colours
    # Extra objects and repeats are fine (at least one of each).
    extra = [box("a blue dog"), box("a blue dog"), box("a white bowl"), box("a cat")]
    assert check(BLUE_DOG_WHITE_BOWL, extra).passed


def test_attribution_colour_inside_another_caption():
    # "a blue dog" appears inside the bowl's caption: the substring rule counts it for the dog.
    assert check(BLUE_DOG_WHITE_BOWL, [box("a white bowl with a blue dog painted on it")]).passed
    # The phrase needs its article: "a dark blue dog" does not contain "a blue dog".
    assert not check(BLUE_DOG_WHITE_BOWL, [box("a dark blue dog"), box("a white bowl")]).passed
    # "an orange chair" is matched with its article "an".
    assert check(BLUE_BOOK_ORANGE_CHAIR, [box("a blue book"), box("an orange chair")]).passed
    assert not check(BLUE_BOOK_ORANGE_CHAIR, [box("a blue book"), box("a orange chair")]).passed


def test_spatial_compares_box_centres_for_each_direction():
    for loc1 in ("left", "right", "top", "bottom"):
        prompt = spatial_prompt(loc1)
        first, second = prompt.facts.phrases
        axis = 0 if loc1 in ("left", "right") else 1
        small = [0, 0, 100, 100]
        large = [0, 0, 100, 100]
        large[axis] = 300
        good_first, good_second = (small, large) if loc1 in ("left", "top") else (large, small)
        good = [box(first, *good_first), box(second, *good_second)]
        bad = [box(first, *good_second), box(second, *good_first)]
        assert check(prompt, good).passed, loc1
        assert not check(prompt, bad).passed, loc1


def test_spatial_ties_fail():
    prompt = spatial_prompt("left")
    first, second = prompt.facts.phrases
    # Different boxes, same centre x (50): neither is left of the other.
    verdict = check(prompt, [box(first, 0, 0, 100, 50), box(second, 25, 200, 50, 50)])
    assert not verdict.passed
    assert "centre x 50" in verdict.found


def test_spatial_missing_object_fails_and_says_which():
    prompt = spatial_prompt("left")
    first, second = prompt.facts.phrases
    verdict = check(prompt, [box(first)])
    assert not verdict.passed
    assert f"no box for {second!r}" in verdict.found


def test_spatial_uses_the_first_matching_box_and_word_boundaries():
    prompt = spatial_prompt("left")
    first, second = prompt.facts.phrases
    # The first box named like the first object decides, later ones are ignored.
    boxes = [box(first, 0), box(second, 200), box(first, 400)]
    assert check(prompt, boxes).passed
    boxes = [box(first, 400), box(second, 200), box(first, 0)]
    assert not check(prompt, boxes).passed
    # A phrase must end the name or be followed by a space: "a cat" is not in "a catalog".
    lookalike = [box(first + "alog", 0), box(second, 200)]
    assert not check(prompt, lookalike).passed
    assert check(prompt, [box(first + " sitting", 0), box("a photo of " + second, 200)]).passed


def test_detections_list_their_scores_in_the_verdict():
    verdict = check(NEGATION_BACKPACK, [box("a photo of a backpack", 1, 2, 3, 4, score=0.4)])
    assert "'a photo of a backpack' [1, 2, 3, 4] 0.40" in verdict.found
