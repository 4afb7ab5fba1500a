"""Recorded LLM answers in the reference's cache format, read and written.

A JSON object maps each prompt to the list of raw answers in the LMD text format. A prompt asked
several times (the ten negation repeats) takes the list's entries in order, and an answer that
cannot be parsed uses up its entry, as the reference's cache does (docs/method.md, "Recorded answers").
The LMD authors publish their GPT-3.5 and GPT-4 answers in this format, so they can be scored
here as they are.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lmd_bot.errors import LmdError

MAX_FILE_BYTES = 50_000_000


class ResponsesError(LmdError):
    user_message = "That file of recorded answers can't be used."

    def __init__(self, detail: str) -> None:
        super().__init__(detail, user_message=f"That file of recorded answers can't be used: {detail}")


def parse_responses(text: str) -> dict[str, list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResponsesError(f"it is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ResponsesError("it must be a JSON object mapping each prompt to a list of answers")
    out: dict[str, list[str]] = {}
    for prompt, answers in data.items():
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ResponsesError(f"the value for {prompt[:80]!r} must be a list of answer strings")
        out[prompt] = answers
    return out


def load_responses(path: Path) -> dict[str, list[str]]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ResponsesError(f"{path} is larger than {MAX_FILE_BYTES // 1_000_000} MB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResponsesError(f"cannot read {path}: {exc}") from None
    try:
        return parse_responses(text)
    except ResponsesError as exc:  # which file: --responses, or the answers a run resumes from
        raise ResponsesError(f"{path}: {exc}") from None


def save_responses(path: Path, responses: dict[str, list[str]]) -> None:
    """Write atomically (a reader, or a crash, never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(responses, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


class AnswerCursor:
    """Hands out a prompt's recorded answers in order, each once."""

    def __init__(self, responses: dict[str, list[str]]) -> None:
        self._responses = responses
        self._used: Counter[str] = Counter()

    def next(self, prompt: str) -> tuple[int, str] | None:
        """The next unused answer for ``prompt`` and its position in the list, or None."""
        answers = self._responses.get(prompt, [])
        position = self._used[prompt]
        if position >= len(answers):
            return None
        self._used[prompt] += 1
        return position, answers[position]
