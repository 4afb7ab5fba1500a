"""The OpenAI-compatible backend: chat completions over aiohttp (Ollama, vLLM, llama.cpp, ...).

For users without an Anthropic key. The model answers in the LMD text format (the reference's
``Objects: [...] / Background prompt: / Negative prompt:`` lines), which small open models follow
well from examples, and which :func:`lmd_bot.layout.lmd_text.parse_lmd_text` reads without
evaluating anything. A message that is not a scene gets one ``Reply: ...`` line.

The text format has no ids, so in a revision objects are recognised by caption and position
(:func:`lmd_bot.planner.identity.match_ids`; the prompt asks the model to keep the previous
order and copy untouched objects exactly, which makes the match exact for them).

``temperature`` is 0.25, the reference's value for layout planning. Usage comes from the
response's ``usage`` (``prompt_tokens_details.cached_tokens`` counts as cache reads where the
server reports it).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from lmd_bot.errors import PlannerError
from lmd_bot.layout.schema import LayoutLimits, SceneLayout
from lmd_bot.planner import prompts
from lmd_bot.planner.answer import RawAnswer, read_lmd_answer
from lmd_bot.planner.backend import Completion, Turn
from lmd_bot.planner.base import Usage
from lmd_bot.planner.identity import match_ids
from lmd_bot.planner.retry import RetryableError, parse_retry_after

log = logging.getLogger(__name__)

TEMPERATURE = 0.25
AUTH_MESSAGE = "The layout service rejected the bot's credentials; please tell the bot's operator."
# A chat completion holding one layout is a few kilobytes; anything far larger is not one.
MAX_RESPONSE_BYTES = 1_000_000
_RETRY_STATUSES = {408, 409, 425, 429}


class OpenAICompatBackend:
    """``POST {base_url}/chat/completions`` with an aiohttp session made on first use."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        max_tokens: int,
        limits: LayoutLimits,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.label = f"openai-compatible:{model}@{base_url}"
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._max_tokens = max_tokens
        self._system = prompts.system_prompt("lmd", limits.max_objects)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def complete(self, turns: list[Turn], timeout_s: float) -> Completion:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        body = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": self._system},
                *({"role": t.role, "content": t.content} for t in turns),
            ],
            "max_tokens": self._max_tokens,
            "temperature": TEMPERATURE,
            "stream": False,
        }
        timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(self._connect_timeout_s, timeout_s))
        try:
            async with self._session.post(
                self._url, json=body, headers=self._headers, timeout=timeout
            ) as resp:
                status, headers = resp.status, resp.headers
                raw = b""
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_RESPONSE_BYTES:
                        raise PlannerError(f"{self._url} sent more than {MAX_RESPONSE_BYTES} bytes")
        except aiohttp.ClientError as exc:  # refused, reset, dropped mid-answer, bad framing
            raise RetryableError(f"{self._url} unreachable: {exc.__class__.__name__}: {exc}") from None
        detail = raw[:300].decode("utf-8", "replace")
        if status in _RETRY_STATUSES or status >= 500:
            raise RetryableError(f"{self._url} answered {status}", retry_after=parse_retry_after(headers))
        if status in (401, 403):
            raise PlannerError(
                f"{self._url} answered {status}: {detail}; check LMD_PLANNER__OPENAI_API_KEY",
                user_message=AUTH_MESSAGE,
            )
        if status != 200:
            raise PlannerError(f"{self._url} answered {status}: {detail}")
        return _completion(raw, self._url)

    def read(self, text: str, previous: SceneLayout | None) -> RawAnswer:
        answer = read_lmd_answer(text)
        if previous is not None and answer.reply is None:
            answer.objects = match_ids(answer.objects, previous)
        return answer

    def show(self, layout: SceneLayout) -> str:
        return prompts.answer_lmd(
            [(o.caption, tuple(o.box.as_list())) for o in layout.objects], layout.background, layout.negative
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _completion(raw: bytes, url: str) -> Completion:
    try:
        data: Any = json.loads(raw)
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
        if isinstance(text, list):  # the list-of-parts form some servers send
            text = "".join(p["text"] for p in text if isinstance(p, dict) and p.get("type") == "text")
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        prompt_tokens = _count(usage.get("prompt_tokens"))
        completion_tokens = _count(usage.get("completion_tokens"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise PlannerError(f"{url} sent something that is not a chat completion ({exc!r:.200})") from None
    if not isinstance(text, str):
        raise PlannerError(f"{url} sent a message whose content is not text")
    stop = "max_tokens" if finish == "length" else "refusal" if finish == "content_filter" else "end"
    return Completion(
        text=text,
        stop=stop,
        usage=Usage(
            input_tokens=max(0, prompt_tokens - cached),
            output_tokens=completion_tokens,
            cache_read_tokens=cached,
        ),
        request_id=data.get("id") if isinstance(data.get("id"), str) else None,
    )
