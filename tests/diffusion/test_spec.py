"""Layout -> generation spec: order, prompts, merged duplicates, negatives, per-object seeds."""

from lmd_bot.diffusion.spec import (
    OBJECT_NEGATIVE_EXTRA,
    OVERALL_NEGATIVE,
    build_spec,
    merged_phrase,
    object_seed,
)
from lmd_bot.layout.schema import SceneLayout


def _layout(objects, background="A realistic scene", negative=""):
    return SceneLayout.model_validate(
        {
            "objects": [{"id": i, "caption": c, "box": b} for i, c, b in objects],
            "background": background,
            "negative": negative,
        }
    )


def test_spec_orders_objects_by_caption_then_id_and_merges_duplicates():
    layout = _layout(
        [
            (3, "a skier", [10, 300, 80, 150]),
            (1, "a palm tree", [400, 100, 100, 250]),
            (2, "a skier", [120, 300, 80, 150]),
            (4, "a skier", [230, 300, 80, 150]),
        ],
        background="A realistic outdoor scene with snow",
    )
    spec = build_spec(layout, seed=7)
    assert [o.id for o in spec.objects] == [1, 2, 3, 4]
    assert spec.prompt == "A realistic outdoor scene with snow with a palm tree, three skiers"
    assert [p.text for p in spec.phrases] == ["a palm tree", "three skiers"]
    assert [p.word for p in spec.phrases] == ["tree", "skiers"]
    assert spec.phrases[1].object_ids == (2, 3, 4)
    for phrase in spec.phrases:
        assert spec.prompt[phrase.span.start : phrase.span.end] == phrase.text
    skier = spec.object(3)
    assert skier.prompt == "A realistic outdoor scene with snow with a skier"
    assert skier.prompt[skier.span.start : skier.span.end] == "a skier"
    assert skier.word == "skier"
    assert skier.nbox == (10 / 512, 300 / 512, 10 / 512 + 80 / 512, 300 / 512 + 150 / 512)


def test_spec_without_objects_is_the_background_alone():
    spec = build_spec(_layout([], background="A forest", negative="flowers"), seed=1)
    assert spec.prompt == "A forest"
    assert spec.objects == () and spec.phrases == ()
    assert spec.negative == f"flowers, {OVERALL_NEGATIVE}"


def test_negative_prompts_put_the_layout_negative_first_and_add_object_words():
    spec = build_spec(_layout([(1, "a cat", [0, 0, 100, 100])], negative="birds"), seed=1)
    assert spec.negative == f"birds, {OVERALL_NEGATIVE}"
    assert spec.objects[0].negative == f"birds, {OVERALL_NEGATIVE}, {OBJECT_NEGATIVE_EXTRA}"
    plain = build_spec(_layout([(1, "a cat", [0, 0, 100, 100])]), seed=1)
    assert plain.negative == OVERALL_NEGATIVE


def test_merged_phrase_strips_only_a_leading_article():
    assert merged_phrase("a cat", 1) == "a cat"
    assert merged_phrase("a cat", 2) == "two cats"
    assert merged_phrase("an apple", 3) == "three apples"
    assert merged_phrase("a jumping pink dolphin", 2) == "two jumping pink dolphins"
    assert merged_phrase("a man in a hat", 2).startswith("two men in")
    assert merged_phrase("a mouse", 2) == "two mice"


def test_object_seeds_depend_on_scene_seed_and_id_only():
    one = build_spec(_layout([(1, "a cat", [0, 0, 100, 100]), (2, "a dog", [200, 0, 100, 100])]), seed=7)
    # Adding an object (sorting before the others) leaves existing objects' seeds alone.
    two = build_spec(
        _layout(
            [
                (1, "a cat", [0, 0, 100, 100]),
                (2, "a dog", [200, 0, 100, 100]),
                (3, "a bird", [0, 300, 90, 90]),
            ]
        ),
        seed=7,
    )
    assert one.object(1).seed == two.object(1).seed
    assert one.object(2).seed == two.object(2).seed
    assert len({o.seed for o in two.objects} | {7}) == 4
    assert object_seed(7, 2) != object_seed(8, 1)
    assert object_seed(7, 1) != build_spec(_layout([(1, "a cat", [0, 0, 100, 100])]), seed=8).object(1).seed
    assert all(0 <= o.seed < 2**63 for o in two.objects)


def test_background_repeating_a_caption_keeps_the_phrase_span_on_the_phrase():
    spec = build_spec(_layout([(1, "a cat", [0, 0, 100, 100])], background="A cat cafe"), seed=0)
    phrase = spec.phrases[0]
    assert spec.prompt == "A cat cafe with a cat"
    assert phrase.span.start == len("A cat cafe with ")
