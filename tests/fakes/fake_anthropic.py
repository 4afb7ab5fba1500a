"""A fake Anthropic Messages API on 127.0.0.1, for the real ``anthropic`` SDK to talk to.

Use it with the real SDK (or lmd-bot's planner) pointed at ``fake.base_url``::

    from tests.fakes.fake_anthropic import FakeAnthropic

    async with FakeAnthropic(api_key="test-key") as fake:
        fake.push_layout([("a red apple", (40, 300, 90, 90))], background="A kitchen table")
        fake.push_error(529, "overloaded_error", "Overloaded")   # then a 529, and so on
        settings = load_settings(planner={"api_key": "test-key", "base_url": fake.base_url})
        planner = build_planner(settings)
        result = await planner.plan("an apple")
        assert fake.bodies[0]["messages"][0]["content"] == "Caption: an apple"

As a pytest fixture (pytest-asyncio, ``asyncio_mode = "auto"``)::

    @pytest.fixture
    async def fake_anthropic():
        async with FakeAnthropic(api_key="test-key") as fake:
            yield fake

Scripting (each ``push_*`` queues one reply; requests take them in order):

- :meth:`FakeAnthropic.push_layout` / :meth:`FakeAnthropic.push_reply`: a message whose text is an
  answer in the planner's JSON schema (a layout; or a short reply to the user);
- :meth:`FakeAnthropic.push_message`: any text, with any ``stop_reason`` (``max_tokens`` for a
  truncated answer, ``refusal``) and optional explicit usage;
- :meth:`FakeAnthropic.push_error`: an API error (``{"type": "error", "error": {...}}``), with
  headers such as ``retry-after`` and an optional ``error_code`` (``enforced_spend_limit_reached``);
- ``push_hang()`` (never answers) and ``push_stall()`` (headers, half a body, silence);
- ``fake.always = Reply(...)``: the answer for every request once the script is empty.

Inspection: ``fake.received`` (method, path, lower-case headers, JSON body) and ``fake.bodies``.

Like the real API (version 2026-10-21) it rejects, with a 400, ``temperature``/``top_p``/``top_k``,
an empty text content and a conversation that ends with an assistant turn (prefill); with
``api_key`` set it answers 401 to any other key. Usage is simulated: tokens are characters / 4;
a system prefix up to a ``cache_control`` breakpoint of at least 512 tokens (Haiku 5.5's minimum)
is a cache write the first time and a cache read afterwards; ``input_tokens`` is the rest.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any

from tests.fakes import Received, Reply, ScriptedServer

MIN_CACHEABLE_TOKENS = 512
_ids = itertools.count(1)


def _tokens(text: str) -> int:
    return len(text) // 4


def layout_answer(
    objects: Sequence[tuple[str, Sequence[int]] | tuple[str, Sequence[int], int]],
    background: str = "A realistic scene",
    negative: str = "",
) -> str:
    """The planner's JSON answer for a layout: objects are (caption, [x, y, w, h]) or
    (caption, [x, y, w, h], id); the id defaults to 0 (a new object)."""
    out = []
    for item in objects:
        caption, box = item[0], item[1]
        oid = item[2] if len(item) > 2 else 0
        out.append({"id": oid, "caption": caption, "box": dict(zip("xywh", box, strict=True))})
    layout = {"objects": out, "background": background, "negative": negative}
    return json.dumps({"kind": "layout", "layout": layout, "reply": None})


def reply_answer(text: str) -> str:
    """The planner's JSON answer for a short reply instead of a layout."""
    return json.dumps({"kind": "reply", "layout": None, "reply": text})


class FakeAnthropic(ScriptedServer):
    """The fake Messages API (see the module docstring)."""

    route = "/v1/messages"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self._cached_prefixes: set[str] = set()

    # --- scripting -----------------------------------------------------------------------------

    def push_message(
        self, text: str, *, stop_reason: str = "end_turn", usage: dict[str, int] | None = None
    ) -> None:
        def body(request: Received) -> dict[str, Any]:
            return {
                "id": f"msg_fake_{next(_ids)}",
                "type": "message",
                "role": "assistant",
                "model": (request.body or {}).get("model", "claude-fake"),
                "content": [{"type": "text", "text": text}] if text else [],
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage or self._usage(request.body or {}, text),
            }

        self.push(Reply(200, body, {"request-id": f"req_fake_{next(_ids)}"}))

    def push_layout(
        self,
        objects: Sequence[tuple[str, Sequence[int]] | tuple[str, Sequence[int], int]],
        background: str = "A realistic scene",
        negative: str = "",
    ) -> None:
        self.push_message(layout_answer(objects, background, negative))

    def push_reply(self, text: str) -> None:
        self.push_message(reply_answer(text))

    def push_error(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        error_code: str | None = None,
    ) -> None:
        self.push(_error(status, error_type, message, headers=headers, error_code=error_code))

    # --- behaviour -----------------------------------------------------------------------------

    def check(self, request: Received) -> Reply | None:
        if self.api_key is not None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {self.api_key}" and request.headers.get("x-api-key") != self.api_key:
                return _error(401, "authentication_error", "invalid x-api-key")
        body = request.body if isinstance(request.body, dict) else {}
        for name in ("temperature", "top_p", "top_k"):
            if name in body:
                return _error(400, "invalid_request_error", f"{name}: Extra inputs are not permitted")
        messages = body.get("messages") or []
        if not messages:
            return _error(400, "invalid_request_error", "messages: at least one message is required")
        for i, m in enumerate(messages):
            if isinstance(m.get("content"), str) and not m["content"]:
                return _error(400, "invalid_request_error", f"messages.{i}: text content must be non-empty")
        if messages[-1].get("role") == "assistant":
            return _error(400, "invalid_request_error", "This model does not support assistant prefill")
        return None

    def unscripted(self, request: Received) -> Reply:
        return _error(418, "fake_error", "fake server: nothing scripted for this request")

    def _usage(self, body: dict[str, Any], answer: str) -> dict[str, int]:
        system = body.get("system") or []
        if isinstance(system, str):
            system = [{"type": "text", "text": system}]
        texts = [b.get("text", "") for b in system]
        marked = [i for i, b in enumerate(system) if b.get("cache_control")]
        cut = marked[-1] + 1 if marked else 0
        prefix = "".join(texts[:cut])
        rest = "".join(texts[cut:]) + json.dumps(body.get("messages", []), ensure_ascii=False)
        read = write = 0
        if _tokens(prefix) >= MIN_CACHEABLE_TOKENS:
            if prefix in self._cached_prefixes:
                read = _tokens(prefix)
            else:
                write = _tokens(prefix)
                self._cached_prefixes.add(prefix)
        else:
            rest = prefix + rest
        return {
            "input_tokens": _tokens(rest),
            "output_tokens": max(1, _tokens(answer)),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
        }


def _error(
    status: int,
    error_type: str,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    error_code: str | None = None,
) -> Reply:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    return Reply(
        status,
        {"type": "error", "error": error, "request_id": f"req_fake_{next(_ids)}"},
        {"request-id": f"req_fake_{next(_ids)}", **(headers or {})},
    )
