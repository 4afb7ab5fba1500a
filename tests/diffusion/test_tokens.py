"""Token spans with the real CLIP tokenizer (SD v1.5's ids, from the shipped vocabulary)."""

import pytest

from lmd_bot.diffusion.spec import Span, build_spec
from lmd_bot.diffusion.tokens import token_span
from lmd_bot.errors import RenderError
from lmd_bot.layout.schema import SceneLayout


def _tokens(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_tokenizer_has_real_clip_ids(tokenizer):
    assert tokenizer("a photo of three red apples")["input_ids"] == [
        49406,
        320,
        1125,
        539,
        2097,
        736,
        14032,
        49407,
    ]


def test_span_of_a_multi_token_word_ends_on_its_last_piece(tokenizer):
    prompt = "A realistic scene with a hippopotamus"
    span = token_span(tokenizer, prompt, Span(start=23, end=len(prompt)))
    tokens = _tokens(tokenizer, prompt)
    assert [tokens[i] for i in span.positions] == ["a</w>", "hippo", "potam", "us</w>"]
    assert tokens[span.word_position] == "us</w>"


def test_repeated_words_resolve_to_the_phrase_not_the_background(tokenizer):
    layout = SceneLayout.model_validate(
        {"background": "A cat cafe", "objects": [{"id": 1, "caption": "a cat", "box": [0, 0, 99, 99]}]}
    )
    spec = build_spec(layout, seed=0)
    span = token_span(tokenizer, spec.prompt, spec.phrases[0].span)
    tokens = _tokens(tokenizer, spec.prompt)
    # <bos> a cat cafe with [a cat]: the first "a cat" (positions 1-2) is the background's.
    assert span.positions == (5, 6)
    assert tokens[span.word_position] == "cat</w>"


def test_merged_phrase_and_punctuation(tokenizer):
    layout = SceneLayout.model_validate(
        {
            "background": "A realistic photo",
            "objects": [
                {"id": 1, "caption": "a cat", "box": [0, 0, 99, 99]},
                {"id": 2, "caption": "a cat", "box": [200, 0, 99, 99]},
                {"id": 3, "caption": "a blue dog", "box": [0, 200, 99, 99]},
            ],
        }
    )
    spec = build_spec(layout, seed=0)
    assert spec.prompt == "A realistic photo with a blue dog, two cats"
    tokens = _tokens(tokenizer, spec.prompt)
    dog, cats = (token_span(tokenizer, spec.prompt, p.span) for p in spec.phrases)
    assert [tokens[i] for i in dog.positions] == ["a</w>", "blue</w>", "dog</w>"]
    assert [tokens[i] for i in cats.positions] == ["two</w>", "cats</w>"]
    assert tokens[cats.word_position] == "cats</w>"
    assert tokens[cats.positions[0] - 1] == ",</w>"


def test_object_prompt_span(tokenizer):
    layout = SceneLayout.model_validate(
        {
            "background": "An oil painting",
            "objects": [{"id": 1, "caption": "a steam-boat", "box": [0, 0, 99, 99]}],
        }
    )
    obj = build_spec(layout, seed=0).objects[0]
    span = token_span(tokenizer, obj.prompt, obj.span)
    tokens = _tokens(tokenizer, obj.prompt)
    assert [tokens[i] for i in span.positions] == ["a</w>", "steam</w>", "-</w>", "boat</w>"]
    assert tokens[span.word_position] == "boat</w>"


def test_phrase_beyond_the_77_token_window_is_a_clear_error(tokenizer):
    prompt = "A scene with " + ", ".join(f"a red apple number {i}" for i in range(20))
    start = prompt.rindex("a red apple")
    with pytest.raises(RenderError) as err:
        token_span(tokenizer, prompt, Span(start=start, end=len(prompt)))
    assert "too long" in err.value.user_message
