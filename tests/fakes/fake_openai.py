"""A fake OpenAI-compatible chat-completions server (what Ollama, vLLM and llama.cpp serve).

::

    from tests.fakes.fake_openai import FakeOpenAI

    async with FakeOpenAI() as fake:
        fake.push_completion("Objects: [('a cat', [10, 20, 100, 100])]\\nBackground prompt: A room\\n"
                             "Negative prompt: ")
        settings = load_settings(planner={"backend": "openai", "openai_base_url": fake.api_base})
        ...
        assert fake.bodies[0]["messages"][0]["role"] == "system"

``fake.api_base`` is the ``/v1`` root a client is configured with. Scripting: ``push_completion``
(text and ``finish_reason``: ``stop``, ``length`` for a truncated answer, ``content_filter``),
``push_error`` (status, message, headers such as ``retry-after``), ``push_hang()``,
``push_stall()``, and ``fake.always``; see :class:`tests.fakes.ScriptedServer`. With ``api_key``
set, other keys get a 401. Usage is simulated as characters / 4.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from tests.fakes import Received, Reply, ScriptedServer

_ids = itertools.count(1)


class FakeOpenAI(ScriptedServer):
    route = "/v1/chat/completions"

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v1"

    def push_completion(self, text: str, *, finish_reason: str = "stop") -> None:
        def body(request: Received) -> dict[str, Any]:
            prompt = json.dumps((request.body or {}).get("messages", []), ensure_ascii=False)
            return {
                "id": f"chatcmpl-fake-{next(_ids)}",
                "object": "chat.completion",
                "created": 0,
                "model": (request.body or {}).get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": (len(prompt) + len(text)) // 4,
                },
            }

        self.push(Reply(200, body))

    def push_error(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.push(_error(status, message, headers))

    def check(self, request: Received) -> Reply | None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided")
        return None

    def unscripted(self, request: Received) -> Reply:
        return _error(418, "fake server: nothing scripted for this request")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "fake_error", "code": None}}, headers or {})
