"""The Anthropic backend: Claude through the Messages API, answering in a JSON schema.

Structured output uses the API's JSON-schema output mode (``output_config.format``) with the
schema of :class:`~lmd_bot.planner.answer.PlannerAnswer`, transformed exactly as the SDK's
``messages.parse(output_format=PlannerAnswer)`` transforms it (``anthropic.transform_schema``), so
the request is the same as ``parse`` sends. We call ``messages.create`` and validate the text
ourselves because ``parse`` raises ``pydantic.ValidationError`` on a truncated or refused answer
before its ``stop_reason`` and token usage can be seen, and we need both: the stop reason to tell
the model what went wrong, the usage to count the cost of every attempt.

The fixed system prompt (rules and examples, several thousand tokens) is one system block with
a ``cache_control`` breakpoint: the API caches it for five minutes, and later calls read it at a
tenth of the price. Temperature is not sent (API version 2026-10-21 removed it). Thinking and
effort come from the settings (``disabled`` and ``low`` suit Haiku 5.5; Sonnet 5.5 needs
``between_tools``; see config/default.toml).
"""

from __future__ import annotations

import logging
from typing import Any

import anthropic

from lmd_bot.errors import PlannerError
from lmd_bot.layout.schema import LayoutLimits, SceneLayout
from lmd_bot.planner import prompts
from lmd_bot.planner.answer import PlannerAnswer, RawAnswer, read_json_answer
from lmd_bot.planner.backend import Completion, Turn
from lmd_bot.planner.base import Usage
from lmd_bot.planner.retry import RetryableError, parse_retry_after

log = logging.getLogger(__name__)

AUTH_MESSAGE = "The layout service rejected the bot's credentials; please tell the bot's operator."
SPEND_CAP_MESSAGE = "The layout service's spending limit is reached; please tell the bot's operator."
# The schema, as the SDK's messages.parse(output_format=PlannerAnswer) would send it; built once so
# that it stays byte-identical (a changed schema is a new prompt prefix: no cache hit)
# (key order included).
ANSWER_FORMAT: dict[str, Any] = {"schema": anthropic.transform_schema(PlannerAnswer), "type": "json_schema"}


class AnthropicBackend:
    """Claude via ``anthropic.AsyncAnthropic`` with the SDK's retries off (ours keep the deadline)."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        max_tokens: int,
        limits: LayoutLimits,
        base_url: str | None = None,
        effort: str | None = "low",
        thinking: str | None = "disabled",
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.label = f"anthropic:{model}"
        self._model = model
        self._max_tokens = max_tokens
        self._effort = effort
        self._thinking = thinking
        self._system = [
            {
                "type": "text",
                "text": prompts.system_prompt("json", limits.max_objects),
                "cache_control": {"type": "ephemeral"},
            }
        ]
        self._connect_timeout_s = connect_timeout_s
        self._client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url or None, max_retries=0)

    async def complete(self, turns: list[Turn], timeout_s: float) -> Completion:
        output_config: dict[str, Any] = {"format": ANSWER_FORMAT}
        if self._effort:
            output_config["effort"] = self._effort
        try:
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=self._max_tokens,
                system=self._system,
                messages=[{"role": t.role, "content": t.content} for t in turns],
                output_config=output_config,
                thinking={"type": self._thinking} if self._thinking else anthropic.omit,
                timeout=anthropic.Timeout(timeout_s, connect=min(self._connect_timeout_s, timeout_s)),
            )
        except anthropic.EnforcedSpendLimitReachedError as exc:
            raise PlannerError(
                f"Anthropic spend limit reached (request {exc.request_id})", user_message=SPEND_CAP_MESSAGE
            ) from None
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise PlannerError(
                f"Anthropic refused the API key ({exc.status_code}: {exc.api_message}); "
                "check LMD_PLANNER__API_KEY",
                user_message=AUTH_MESSAGE,
            ) from None
        except (
            anthropic.RateLimitError,
            anthropic.InternalServerError,
            anthropic.RequestTimeoutError,
            anthropic.ConflictError,
        ) as exc:
            if exc.response.headers.get("x-should-retry") == "false":
                raise PlannerError(f"Anthropic {exc.status_code}, not retryable: {exc.api_message}") from None
            raise RetryableError(
                f"Anthropic {exc.status_code} {exc.type or ''} (request {exc.request_id})".strip(),
                retry_after=parse_retry_after(exc.response.headers),
            ) from None
        except anthropic.APIConnectionError as exc:  # APITimeoutError included
            raise RetryableError(f"Anthropic connection failed: {exc.__class__.__name__}") from None
        except anthropic.APIStatusError as exc:
            raise PlannerError(f"Anthropic {exc.status_code}: {exc.api_message}") from None
        except anthropic.APIResponseValidationError as exc:
            raise PlannerError(f"Anthropic sent a response the SDK cannot read: {exc}") from None

        text = "".join(block.text for block in message.content if block.type == "text")
        stop = {"max_tokens": "max_tokens", "refusal": "refusal"}.get(message.stop_reason or "", "end")
        u = message.usage
        usage = Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_input_tokens or 0,
            cache_write_tokens=u.cache_creation_input_tokens or 0,
        )
        log.debug("anthropic %s: stop %s, usage %s", message.id, message.stop_reason, usage.model_dump())
        return Completion(text=text, stop=stop, usage=usage, request_id=getattr(message, "_request_id", None))

    def read(self, text: str, previous: SceneLayout | None) -> RawAnswer:
        return read_json_answer(text)

    def show(self, layout: SceneLayout) -> str:
        return prompts.answer_json(
            [(o.id, o.caption, tuple(o.box.as_list())) for o in layout.objects],
            layout.background,
            layout.negative,
        )

    async def aclose(self) -> None:
        await self._client.close()
