"""The layout planner: the conversation with the LLM, its repairs, and our validation.

:class:`LayoutPlanner` implements :class:`lmd_bot.planner.base.Planner` over a
:class:`~lmd_bot.planner.backend.Backend`. For each call it

1. checks the user's text (empty, too long; control characters are cleaned),
2. builds the conversation: past rounds as (caption or edit, layout) turns, then the new message,
3. asks the backend, retrying transient failures (:mod:`lmd_bot.planner.retry`),
4. reads the answer: a short reply is returned as is; a layout gets its ids settled
   (:mod:`lmd_bot.planner.identity`) and is validated and capped by
   :func:`~lmd_bot.layout.repair.repair_layout`,
5. sends an answer that was cut off, refused, unreadable, or needed repairs back to the model
   with what was wrong, up to ``max_repairs`` times. After the last repair round a layout that
   our repairs can fix is returned with notes saying what changed; an answer that cannot be read
   ends in a :class:`~lmd_bot.errors.PlannerError`.

Everything runs under one deadline (``planner.deadline_s``), retries and repairs included;
passing it raises :class:`~lmd_bot.errors.PlannerBusyError`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.layout.canvas import SQUARE_512, Canvas
from lmd_bot.layout.repair import repair_layout
from lmd_bot.layout.schema import LayoutLimits, SceneLayout, clean_text
from lmd_bot.planner import prompts
from lmd_bot.planner.answer import AnswerError
from lmd_bot.planner.backend import Backend, Completion, Turn
from lmd_bot.planner.base import PlanResult, PlanRound, Usage
from lmd_bot.planner.identity import settle_ids
from lmd_bot.planner.retry import RetryPolicy, call_with_retries

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 600
# Past rounds shown to the model: the first (the original description) and the latest ones. Older
# rounds only cost tokens; the latest layout carries the scene.
MAX_HISTORY_ROUNDS = 8

EMPTY_MESSAGE = "Tell me what to draw, e.g. “three red apples and a blue cup on a table”."
REFUSED_MESSAGE = "The layout service declined this request; try describing the scene differently."


class LayoutPlanner:
    """Plans and revises scene layouts with an LLM backend (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        *,
        limits: LayoutLimits,
        max_user_text_chars: int,
        deadline_s: float,
        attempt_timeout_s: float,
        max_repairs: int,
        retry: RetryPolicy,
        rng: random.Random | None = None,
    ) -> None:
        self._backend = backend
        self._limits = limits
        self._max_user_text_chars = max_user_text_chars
        self._deadline_s = deadline_s
        self._attempt_timeout_s = attempt_timeout_s
        self._max_repairs = max_repairs
        self._retry = retry
        self._rng = rng or random.Random()

    async def plan(self, prompt: str, *, canvas: Canvas = SQUARE_512) -> PlanResult:
        text = self._user_text(prompt)
        turns = [Turn("user", prompts.caption_message(text, canvas))]
        return await self._run(turns, previous=None, used_ids=set(), canvas=canvas)

    async def revise(
        self, history: Sequence[PlanRound], instruction: str, *, canvas: Canvas | None = None
    ) -> PlanResult:
        if not history:
            raise PlannerError(
                "revise() needs at least one round", user_message="There is no scene to edit yet."
            )
        text = self._user_text(instruction)
        shown = list(history)
        if len(shown) > MAX_HISTORY_ROUNDS:
            shown = [shown[0], *shown[-(MAX_HISTORY_ROUNDS - 1) :]]
        turns: list[Turn] = []
        for index, rnd in enumerate(shown):
            message = prompts.caption_message if index == 0 else prompts.edit_message
            turns.append(Turn("user", message(clean_text(rnd.instruction), _canvas_of(rnd.layout))))
            turns.append(Turn("assistant", self._backend.show(rnd.layout)))
        previous = history[-1].layout
        canvas = canvas or _canvas_of(previous)
        turns.append(Turn("user", prompts.edit_message(text, canvas)))
        used = {o.id for rnd in history for o in rnd.layout.objects}
        return await self._run(turns, previous=previous, used_ids=used, canvas=canvas)

    async def aclose(self) -> None:
        await self._backend.aclose()

    # --- internals ---------------------------------------------------------------------------

    def _user_text(self, text: str) -> str:
        if not isinstance(text, str):
            raise PlannerError(f"expected text, got {type(text).__name__}", user_message=EMPTY_MESSAGE)
        cleaned = clean_text(text)
        if not cleaned:
            raise PlannerError("empty prompt", user_message=EMPTY_MESSAGE)
        if len(cleaned) > self._max_user_text_chars:
            raise PlannerError(
                f"prompt of {len(cleaned)} characters",
                user_message=(
                    f"That message is {len(cleaned):,} characters long; please keep it under "
                    f"{self._max_user_text_chars:,}."
                ),
            )
        return cleaned

    async def _run(
        self, turns: list[Turn], *, previous: SceneLayout | None, used_ids: set[int], canvas: Canvas
    ) -> PlanResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline_s
        usage = Usage()
        tries = 0
        try:
            # A hard stop for everything below, whatever a client library does with its timeouts.
            async with asyncio.timeout_at(deadline):
                for repair_round in range(self._max_repairs + 1):
                    completion, n = await call_with_retries(
                        lambda timeout_s, turns=turns: self._backend.complete(turns, timeout_s),
                        policy=self._retry,
                        deadline=deadline,
                        attempt_timeout_s=self._attempt_timeout_s,
                        rng=self._rng,
                    )
                    tries += n
                    usage += completion.usage
                    last = repair_round == self._max_repairs
                    result, problem = self._judge(completion, previous, used_ids, canvas, last=last)
                    if result is not None:
                        result.usage, result.attempts = usage, tries
                        log.info(
                            "planned with %s (template %s): %s; %d tries, usage %s, notes %s",
                            self._backend.label,
                            prompts.TEMPLATE_VERSION,
                            result.layout.summary() if result.layout else f"reply {result.reply!r}",
                            tries,
                            usage.model_dump(),
                            result.notes,
                        )
                        return result
                    log.info("planner answer rejected (round %d): %s", repair_round, problem)
                    if last:
                        break
                    if completion.text.strip():
                        turns = [*turns, Turn("assistant", completion.text)]
                    turns = [*turns, Turn("user", problem)]
        except TimeoutError:
            log.warning(
                "planner deadline of %.0f s passed; %d tries, usage %s", self._deadline_s, tries, usage
            )
            raise PlannerBusyError(f"no usable answer within {self._deadline_s:.0f} s") from None
        except PlannerError as exc:
            log.warning("planner failed: %s; usage %s", exc, usage.model_dump())
            raise
        log.warning("planner gave up after %d repair rounds; usage %s", self._max_repairs, usage.model_dump())
        if completion.stop == "refusal":
            raise PlannerError("the model refused", user_message=REFUSED_MESSAGE)
        raise PlannerError(f"no usable layout after {self._max_repairs} repair rounds: {problem}")

    def _judge(
        self,
        completion: Completion,
        previous: SceneLayout | None,
        used_ids: set[int],
        canvas: Canvas,
        *,
        last: bool,
    ) -> tuple[PlanResult | None, str]:
        """A result to return, or the request that asks the model to repair its answer."""
        if completion.stop == "max_tokens":
            return None, prompts.truncated_request(self._limits.max_objects)
        if completion.stop == "refusal":
            return None, prompts.REFUSED_REQUEST
        try:
            raw = self._backend.read(completion.text, previous)
        except AnswerError as exc:
            return None, prompts.problems_request(exc.problems)
        if raw.reply is not None:
            reply = clean_text(raw.reply)
            if not reply:  # only invisible characters: the user would get an empty message
                return None, prompts.problems_request(["the reply is empty"])
            if len(reply) > MAX_REPLY_CHARS:
                reply = reply[: MAX_REPLY_CHARS - 1].rstrip() + "…"
            return PlanResult(reply=reply), ""
        objects = settle_ids(raw.objects, previous, used_ids)
        repaired = repair_layout(
            objects,
            raw.background,
            raw.negative,
            width=canvas.width,
            height=canvas.height,
            limits=self._limits,
        )
        # Repairs that dropped every object the model proposed leave a scene it did not mean: the
        # background alone. That is no answer even in the last round (a layout of no objects that
        # the model gave as such is one).
        if repaired.notes and (not last or (raw.objects and not repaired.layout.objects)):
            return None, prompts.repairs_request(repaired.notes, canvas)
        return PlanResult(layout=repaired.layout, notes=repaired.notes), ""


def _canvas_of(layout: SceneLayout) -> Canvas:
    return Canvas(layout.width, layout.height)
