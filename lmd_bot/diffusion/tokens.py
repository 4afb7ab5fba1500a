"""Where a phrase and its head word sit in the CLIP-tokenized prompt (docs/method.md, "Token positions").

The reference finds a phrase by searching its token string in the prompt's token string and
takes the first match. That picks the wrong words when the background repeats them ("A cat cafe
with a cat" guides "cat cafe"), and a string search can match inside a longer token. The spec
knows the character span of every phrase it placed, so positions are counted instead: CLIP splits
text into words at whitespace and punctuation before byte-pair encoding, so the tokens of
``prompt[:start]`` are exactly the tokens before a phrase that starts a word. Positions count the
start-of-text token as 0, as the attention maps' token axis does.

- phrase tokens: every position of the phrase (the box energy uses them all);
- word token: the last sub-token of the phrase's last word, i.e. the phrase's last position
  (attention transfer and the SAM point use it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lmd_bot.diffusion.spec import Span
from lmd_bot.errors import RenderError


class TokenSpan(BaseModel):
    model_config = ConfigDict(frozen=True)

    positions: tuple[int, ...]  # all tokens of the phrase, BOS = position 0
    word_position: int  # the head word's last sub-token


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def token_span(tokenizer, prompt: str, span: Span) -> TokenSpan:
    """Token positions of ``prompt[span.start:span.end]`` in the tokenized ``prompt``.

    Raises :class:`RenderError` when the phrase falls beyond the text encoder's 77-token window
    (it would be truncated away and guidance would have nothing to pull on).
    """
    if not 0 <= span.start < span.end <= len(prompt):
        raise ValueError(f"span {span} is outside a prompt of {len(prompt)} characters")
    first = 1 + _count(tokenizer, prompt[: span.start])
    end = 1 + _count(tokenizer, prompt[: span.end])
    if end <= first:
        raise ValueError(f"{prompt[span.start : span.end]!r} has no tokens")
    # The window holds BOS, the text, and EOS: the text's last slot is max_length - 2.
    limit = tokenizer.model_max_length - 1
    if end > limit:
        total = _count(tokenizer, prompt)
        raise RenderError(
            f"prompt of {total} tokens exceeds the text encoder's {limit - 1}: {prompt!r}",
            user_message=(
                f"This scene's description is too long for Stable Diffusion ({total} tokens, the "
                f"limit is {limit - 1}). Use shorter captions or fewer objects."
            ),
        )
    return TokenSpan(positions=tuple(range(first, end)), word_position=end - 1)
