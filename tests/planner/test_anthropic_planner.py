"""The Anthropic backend: the real SDK against the fake Messages API on 127.0.0.1."""

import asyncio
import json

import anthropic
import pytest

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.planner import prompts
from lmd_bot.planner.answer import PlannerAnswer
from lmd_bot.planner.anthropic_backend import ANSWER_FORMAT, AUTH_MESSAGE, SPEND_CAP_MESSAGE
from lmd_bot.planner.engine import REFUSED_MESSAGE
from lmd_bot.planner.retry import RetryPolicy
from tests.fakes import Reply
from tests.fakes.fake_anthropic import layout_answer
from tests.planner.conftest import API_KEY, anthropic_backend, make_planner

APPLES = [
    ("a red apple", (52, 292, 96, 92)),
    ("a red apple", (158, 300, 96, 92)),
    ("a blue cup", (382, 236, 100, 148)),
]


async def test_plan_returns_a_validated_layout(claude, fake_anthropic):
    fake_anthropic.push_layout(APPLES, "A realistic photo of a kitchen table", "people")
    result = await claude.plan("two red apples and a blue cup, no people")
    layout = result.layout
    assert result.reply is None and result.notes == [] and result.attempts == 1
    assert [(o.id, o.caption, tuple(o.box.as_list())) for o in layout.objects] == [
        (1, "a red apple", (52, 292, 96, 92)),
        (2, "a red apple", (158, 300, 96, 92)),
        (3, "a blue cup", (382, 236, 100, 148)),
    ]
    assert layout.background == "A realistic photo of a kitchen table" and layout.negative == "people"


async def test_request_carries_cached_system_prompt_schema_and_no_temperature(claude, fake_anthropic):
    fake_anthropic.push_layout(APPLES)
    await claude.plan("apples and a cup")
    (request,) = fake_anthropic.received
    body = request.body
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "claude-haiku-5-5" and body["max_tokens"] == 2000
    assert body["messages"] == [{"role": "user", "content": "Caption: apples and a cup"}]
    (system,) = body["system"]
    assert system["cache_control"] == {"type": "ephemeral"}
    assert system["text"] == prompts.system_prompt("json", 16)
    # Haiku 5.5 caches nothing below 512 tokens; leave a wide margin for its denser tokenizer.
    assert prompts.estimate_tokens(system["text"]) > 2 * 512
    assert body["output_config"] == {"format": ANSWER_FORMAT, "effort": "low"}
    schema = body["output_config"]["format"]["schema"]
    assert schema["required"] == ["kind", "layout", "reply"]
    assert schema["$defs"]["BoxAnswer"]["required"] == ["x", "y", "w", "h"]
    assert {p["type"] for p in schema["$defs"]["BoxAnswer"]["properties"].values()} == {"integer"}
    assert body["thinking"] == {"type": "disabled"}
    assert not {"temperature", "top_p", "top_k"} & body.keys()


async def test_schema_is_what_messages_parse_sends(fake_anthropic):
    """Our request's output format is byte-for-byte what the SDK's messages.parse would send."""
    fake_anthropic.push_message(json.dumps({"kind": "reply", "layout": None, "reply": "hi"}))
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url=fake_anthropic.base_url, max_retries=0
    ) as c:
        parsed = await c.messages.parse(
            model="claude-haiku-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            output_format=PlannerAnswer,
        )
    assert parsed.parsed_output == PlannerAnswer(kind="reply", layout=None, reply="hi")
    assert json.dumps(fake_anthropic.bodies[0]["output_config"]["format"]) == json.dumps(ANSWER_FORMAT)


async def test_usage_reports_cache_write_then_cache_read(claude, fake_anthropic):
    fake_anthropic.push_layout(APPLES)
    fake_anthropic.push_layout(APPLES)
    first = await claude.plan("apples")
    second = await claude.plan("apples again")
    assert first.usage.cache_write_tokens > 512 and first.usage.cache_read_tokens == 0
    assert second.usage.cache_read_tokens == first.usage.cache_write_tokens
    assert second.usage.cache_write_tokens == 0
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0


async def test_answer_breaking_the_rules_is_sent_back_then_repaired(claude, fake_anthropic):
    bad = [("a cat", (400, 10, 200, 100)), ("a dog", (10, 10, 0, 50))]
    fake_anthropic.push_layout(bad)
    fake_anthropic.push_layout([("a cat", (300, 10, 200, 100)), ("a dog", (10, 10, 80, 50))])
    result = await claude.plan("a cat and a dog")
    assert result.notes == [] and result.attempts == 2
    assert [o.caption for o in result.layout.objects] == ["a cat", "a dog"]
    second = fake_anthropic.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert json.loads(second[1]["content"])["layout"]["objects"][0]["box"] == {
        "x": 400,
        "y": 10,
        "w": 200,
        "h": 100,
    }
    assert "dropped 'a dog': its box has no area" in second[2]["content"]
    assert "rescaled all boxes" in second[2]["content"]
    assert result.usage.output_tokens > 0 and result.usage.cache_read_tokens > 0  # both calls counted


async def test_answer_that_is_not_json_is_sent_back(claude, fake_anthropic):
    fake_anthropic.push_message("Sure! Here is your layout: a cat in the middle.")
    fake_anthropic.push_layout([("a cat", (100, 100, 200, 200))])
    result = await claude.plan("a cat")
    assert result.layout.objects[0].caption == "a cat"
    repair = fake_anthropic.bodies[1]["messages"][-1]["content"]
    assert "not valid JSON for the schema" in repair


async def test_json_in_a_code_fence_is_read(claude, fake_anthropic):
    # A gateway that drops the JSON-schema output mode leaves the model to format the answer itself.
    fake_anthropic.push_message(f"```json\n{layout_answer([('a cat', (100, 100, 200, 200))])}\n```")
    result = await claude.plan("a cat")
    assert result.layout.objects[0].caption == "a cat" and result.attempts == 1


async def test_truncated_answer_is_sent_back(claude, fake_anthropic):
    fake_anthropic.push_message(
        '{"kind": "layout", "layout": {"objects": [{"id": 0, "capt', stop_reason="max_tokens"
    )
    fake_anthropic.push_layout([("a cat", (100, 100, 200, 200))])
    result = await claude.plan("a cat")
    assert result.layout is not None and result.attempts == 2
    messages = fake_anthropic.bodies[1]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": '{"kind": "layout", "layout": {"objects": [{"id": 0, "capt',
    }
    assert "cut off" in messages[2]["content"] and "at most 16 objects" in messages[2]["content"]


async def test_refusal_is_sent_back_then_reported(claude, fake_anthropic):
    fake_anthropic.push_message("", stop_reason="refusal")  # no text at all: no empty assistant turn
    fake_anthropic.push_message("I can't help with that.", stop_reason="refusal")
    fake_anthropic.push_message("I can't help with that.", stop_reason="refusal")
    with pytest.raises(PlannerError) as err:
        await claude.plan("something the classifier dislikes")
    assert not isinstance(err.value, PlannerBusyError)
    assert err.value.user_message == REFUSED_MESSAGE
    assert len(fake_anthropic.received) == 3  # max_repairs = 2
    roles = [m["role"] for m in fake_anthropic.bodies[2]["messages"]]
    assert roles == ["user", "user", "assistant", "user"]


async def test_unreadable_answers_end_in_a_clear_error(claude, fake_anthropic):
    for _ in range(3):
        fake_anthropic.push_message("not json")
    with pytest.raises(PlannerError) as err:
        await claude.plan("a cat")
    assert err.value.user_message == PlannerError.user_message
    assert len(fake_anthropic.received) == 3


async def test_last_repair_round_returns_the_locally_repaired_layout_with_notes(claude, fake_anthropic):
    for _ in range(3):
        fake_anthropic.push_layout([("a cat", (-100, 0, 200, 200)), ("a dog", (300, 300, 100, 100))])
    result = await claude.plan("a cat and a dog")
    assert len(fake_anthropic.received) == 3
    assert any("rescaled all boxes" in n for n in result.notes)
    assert all(o.box.inside(512, 512) for o in result.layout.objects)


async def test_reply_instead_of_a_layout(claude, fake_anthropic):
    fake_anthropic.push_reply("I draw scenes from descriptions. What would you like to see?")
    result = await claude.plan("hello there")
    assert result.layout is None
    assert result.reply == "I draw scenes from descriptions. What would you like to see?"


async def test_429_with_a_long_retry_after_gives_up_at_once(claude, fake_anthropic):
    fake_anthropic.push_error(429, "rate_limit_error", "slow down", headers={"retry-after": "3600"})
    with pytest.raises(PlannerBusyError) as err:
        await claude.plan("a cat")
    assert len(fake_anthropic.received) == 1  # no second request: waiting would pass the deadline
    assert "deadline" in str(err.value)
    assert err.value.user_message == PlannerBusyError.user_message


async def test_429_with_a_short_retry_after_is_retried(claude, fake_anthropic):
    fake_anthropic.push_error(429, "rate_limit_error", "slow down", headers={"retry-after": "0.05"})
    fake_anthropic.push_layout([("a cat", (100, 100, 200, 200))])
    result = await claude.plan("a cat")
    assert result.layout is not None and result.attempts == 2


async def test_529_overloaded_is_retried(claude, fake_anthropic):
    fake_anthropic.push_error(529, "overloaded_error", "Overloaded")
    fake_anthropic.push_error(503, "api_error", "unavailable")
    fake_anthropic.push_layout([("a cat", (100, 100, 200, 200))])
    result = await claude.plan("a cat")
    assert result.layout is not None and result.attempts == 3
    assert fake_anthropic.bodies[0] == fake_anthropic.bodies[2]  # the same request, resent


async def test_persistent_5xx_ends_busy_after_the_retry_budget(claude, fake_anthropic):
    fake_anthropic.push_error(500, "api_error", "boom")
    fake_anthropic.always = fake_anthropic.script[0]
    with pytest.raises(PlannerBusyError):
        await claude.plan("a cat")
    assert len(fake_anthropic.received) == 4  # 1 + max_retries 3


async def test_stalled_connection_is_abandoned_and_retried(fake_anthropic):
    planner = make_planner(anthropic_backend(fake_anthropic.base_url), attempt_timeout_s=0.3)
    fake_anthropic.push_stall()
    fake_anthropic.push_layout([("a cat", (100, 100, 200, 200))])
    try:
        result = await planner.plan("a cat")
    finally:
        await planner.aclose()
    assert result.layout is not None and result.attempts == 2


async def test_server_that_never_answers_ends_at_the_deadline(fake_anthropic):
    planner = make_planner(
        anthropic_backend(fake_anthropic.base_url),
        deadline_s=1.0,
        attempt_timeout_s=0.3,
        retry=RetryPolicy(max_retries=10, base_delay_s=0.01, max_delay_s=0.02),
    )
    fake_anthropic.always = Reply(behaviour="hang")
    try:
        with pytest.raises(PlannerBusyError):
            await asyncio.wait_for(planner.plan("a cat"), 10)  # the outer bound only guards the test
    finally:
        await planner.aclose()
    assert len(fake_anthropic.received) >= 2  # timed-out attempts were retried until the deadline


async def test_authentication_error_is_not_retried(fake_anthropic):
    planner = make_planner(anthropic_backend(fake_anthropic.base_url, api_key="wrong-key"))
    try:
        with pytest.raises(PlannerError) as err:
            await planner.plan("a cat")
    finally:
        await planner.aclose()
    assert not isinstance(err.value, PlannerBusyError)
    assert err.value.user_message == AUTH_MESSAGE and "LMD_PLANNER__API_KEY" in str(err.value)
    assert len(fake_anthropic.received) == 1


async def test_spend_cap_is_not_retried(claude, fake_anthropic):
    fake_anthropic.push_error(
        429,
        "rate_limit_error",
        "spend limit",
        error_code="enforced_spend_limit_reached",
        headers={"retry-after": "0"},
    )
    with pytest.raises(PlannerError) as err:
        await claude.plan("a cat")
    assert not isinstance(err.value, PlannerBusyError)
    assert err.value.user_message == SPEND_CAP_MESSAGE
    assert len(fake_anthropic.received) == 1


async def test_bad_request_is_not_retried(claude, fake_anthropic):
    fake_anthropic.push_error(400, "invalid_request_error", "model: not found")
    with pytest.raises(PlannerError) as err:
        await claude.plan("a cat")
    assert not isinstance(err.value, PlannerBusyError) and "model: not found" in str(err.value)
    assert len(fake_anthropic.received) == 1


async def test_cancellation_passes_through(claude, fake_anthropic):
    fake_anthropic.push_hang()
    task = asyncio.create_task(claude.plan("a cat"))
    while not fake_anthropic.received:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake_anthropic.received) == 1
