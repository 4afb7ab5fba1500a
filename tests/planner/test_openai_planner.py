"""The OpenAI-compatible backend (Ollama, vLLM, llama.cpp) against a fake chat-completions server."""

import asyncio
import socket

import pytest

from lmd_bot.errors import PlannerBusyError, PlannerError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner import PlanRound, prompts
from lmd_bot.planner.engine import REFUSED_MESSAGE
from lmd_bot.planner.openai_backend import AUTH_MESSAGE, TEMPERATURE
from lmd_bot.planner.retry import RetryPolicy
from tests.fakes import Reply
from tests.fakes.fake_openai import FakeOpenAI
from tests.planner.conftest import make_planner, openai_backend

CAT = (
    "Objects: [('a grey cat', [100, 150, 200, 180])]\nBackground prompt: A living room\nNegative prompt: dogs"
)


async def test_plan_reads_the_lmd_text_format(local_llm, fake_openai):
    fake_openai.push_completion(CAT)
    result = await local_llm.plan("a grey cat, no dogs")
    (obj,) = result.layout.objects
    assert (obj.id, obj.caption, obj.box.as_list()) == (1, "a grey cat", [100, 150, 200, 180])
    assert result.layout.background == "A living room" and result.layout.negative == "dogs"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    (request,) = fake_openai.received
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["model"] == "llama3.1" and body["temperature"] == TEMPERATURE and body["max_tokens"] == 2000
    assert body["messages"] == [
        {"role": "system", "content": prompts.system_prompt("lmd", 16)},
        {"role": "user", "content": "Caption: a grey cat, no dogs"},
    ]
    assert "authorization" not in request.headers


async def test_api_key_is_sent_and_a_refused_key_is_not_retried():
    async with FakeOpenAI(api_key="right") as fake:
        good = make_planner(openai_backend(fake.api_base, api_key="right"))
        bad = make_planner(openai_backend(fake.api_base, api_key="wrong"))
        fake.push_completion(CAT)
        try:
            assert (await good.plan("a cat")).layout is not None
            with pytest.raises(PlannerError) as err:
                await bad.plan("a cat")
        finally:
            await good.aclose()
            await bad.aclose()
    assert fake.received[0].headers["authorization"] == "Bearer right"
    assert not isinstance(err.value, PlannerBusyError) and err.value.user_message == AUTH_MESSAGE
    assert "LMD_PLANNER__OPENAI_API_KEY" in str(err.value)
    assert len(fake.received) == 2


async def test_code_fenced_answer_and_reply_lines_are_read(local_llm, fake_openai):
    fake_openai.push_completion(f"```python\n{CAT}\n```")
    fake_openai.push_completion("Reply: Bonjour ! Que voulez-vous dessiner ?")
    assert (await local_llm.plan("a cat")).layout.objects[0].caption == "a grey cat"
    result = await local_llm.plan("bonjour")
    assert result.layout is None and result.reply == "Bonjour ! Que voulez-vous dessiner ?"


async def test_chat_around_the_layout_stays_out_of_its_prompts(local_llm, fake_openai):
    # Small chat models like to add a sentence after the answer; it is no prompt of the scene.
    fake_openai.push_completion(
        "Sure! Here is the layout.\n"
        f"{CAT.replace('dogs', 'None')}\n\nI hope this works for you! Let me know if you want changes."
    )
    fake_openai.push_completion(
        "Objects: [('a grey cat', [100, 150, 200, 180])]\nBackground prompt: A living room\n\n"
        "This layout puts the cat in the middle."
    )
    first = (await local_llm.plan("a grey cat")).layout
    second = (await local_llm.plan("a grey cat")).layout
    assert (first.background, first.negative) == ("A living room", "")
    assert (second.background, second.negative) == ("A living room", "")


async def test_a_reasoning_models_thinking_is_not_read_as_the_answer(local_llm, fake_openai):
    # Reasoning models served without a reasoning parser (llama.cpp, vLLM) send their thoughts
    # inline, where they name the format's markers themselves.
    fake_openai.push_completion(
        "<think>\nThe user wants a cat. Objects: one cat. Background prompt: a living room, "
        "Negative prompt: dogs.\n</think>\n\n" + CAT
    )
    result = await local_llm.plan("a grey cat, no dogs")
    assert result.attempts == 1 and result.notes == []
    assert [o.caption for o in result.layout.objects] == ["a grey cat"]
    assert (result.layout.background, result.layout.negative) == ("A living room", "dogs")


@pytest.mark.parametrize("label", ["**Reply:**", "reply:", "REPLY :", "*Reply*:"])
async def test_a_reply_label_in_markdown_or_another_case_is_a_reply(local_llm, fake_openai, label):
    fake_openai.push_completion(f"{label} I draw pictures: describe a scene.")
    result = await local_llm.plan("what can you do?")
    assert (result.reply, result.attempts) == ("I draw pictures: describe a scene.", 1)


async def test_labels_in_markdown_bold_are_read(local_llm, fake_openai):
    fake_openai.push_completion(
        "**Objects:** [('a grey cat', [100, 150, 200, 180])]\n"
        "**Background prompt:** A living room\n__Negative prompt__: dogs"
    )
    result = await local_llm.plan("a grey cat, no dogs")
    assert result.attempts == 1 and [o.caption for o in result.layout.objects] == ["a grey cat"]
    assert (result.layout.background, result.layout.negative) == ("A living room", "dogs")


async def test_unreadable_answer_is_sent_back_then_repaired(local_llm, fake_openai):
    fake_openai.push_completion("Here you go: a cat in the middle of the room!")
    fake_openai.push_completion(CAT)
    result = await local_llm.plan("a cat")
    assert result.layout is not None and result.attempts == 2
    messages = fake_openai.bodies[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "Here you go: a cat in the middle of the room!"
    assert 'no "Background prompt:" line' in messages[3]["content"]


async def test_out_of_canvas_boxes_are_sent_back(local_llm, fake_openai):
    fake_openai.push_completion("Objects: [('a cat', [450, 10, 200, 100])]\nBackground prompt: A room")
    fake_openai.push_completion("Objects: [('a cat', [300, 10, 200, 100])]\nBackground prompt: A room")
    result = await local_llm.plan("a cat")
    assert result.notes == [] and result.layout.objects[0].box.as_list() == [300, 10, 200, 100]
    assert "rescaled all boxes" in fake_openai.bodies[1]["messages"][-1]["content"]


async def test_truncated_and_filtered_answers(local_llm, fake_openai):
    fake_openai.push_completion("Objects: [('a cat', [1", finish_reason="length")
    fake_openai.push_completion(CAT)
    assert (await local_llm.plan("a cat")).attempts == 2
    assert "cut off" in fake_openai.bodies[1]["messages"][-1]["content"]
    for _ in range(3):
        fake_openai.push_completion("", finish_reason="content_filter")
    with pytest.raises(PlannerError) as err:
        await local_llm.plan("something filtered")
    assert err.value.user_message == REFUSED_MESSAGE


async def test_429_with_a_long_retry_after_gives_up_at_once(local_llm, fake_openai):
    fake_openai.push_error(429, "rate limited", headers={"retry-after": "600"})
    with pytest.raises(PlannerBusyError):
        await local_llm.plan("a cat")
    assert len(fake_openai.received) == 1


async def test_5xx_and_stalls_are_retried(fake_openai):
    planner = make_planner(openai_backend(fake_openai.api_base), attempt_timeout_s=0.3)
    fake_openai.push_error(503, "model loading")
    fake_openai.push_stall()
    fake_openai.push_error(429, "busy", headers={"retry-after": "0.02"})
    fake_openai.push_completion(CAT)
    try:
        result = await planner.plan("a cat")
    finally:
        await planner.aclose()
    assert result.layout is not None and result.attempts == 4


async def test_server_that_never_answers_ends_at_the_deadline(fake_openai):
    planner = make_planner(
        openai_backend(fake_openai.api_base),
        deadline_s=1.0,
        attempt_timeout_s=0.3,
        retry=RetryPolicy(max_retries=10, base_delay_s=0.01, max_delay_s=0.02),
    )
    fake_openai.always = Reply(behaviour="hang")
    try:
        with pytest.raises(PlannerBusyError):
            await asyncio.wait_for(planner.plan("a cat"), 10)  # the outer bound only guards the test
    finally:
        await planner.aclose()
    assert len(fake_openai.received) >= 2


async def test_unreachable_server_ends_busy():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    planner = make_planner(openai_backend(f"http://127.0.0.1:{port}/v1"))
    try:
        with pytest.raises(PlannerBusyError) as err:
            await planner.plan("a cat")
    finally:
        await planner.aclose()
    assert "unreachable" in str(err.value)


async def test_model_not_found_is_a_clear_error(local_llm, fake_openai):
    fake_openai.push_error(404, "model 'llama3.1' not found, try pulling it first")
    with pytest.raises(PlannerError) as err:
        await local_llm.plan("a cat")
    assert "try pulling it first" in str(err.value) and len(fake_openai.received) == 1


async def test_a_non_completion_body_is_a_clear_error(local_llm, fake_openai):
    fake_openai.push(Reply(200, {"hello": "world"}))
    with pytest.raises(PlannerError) as err:
        await local_llm.plan("a cat")
    assert "not a chat completion" in str(err.value)


async def test_content_given_as_a_list_of_text_parts_is_read(local_llm, fake_openai):
    # Some OpenAI-compatible servers send the content in the newer list-of-parts form.
    parts = [{"type": "text", "text": CAT[:40]}, {"type": "text", "text": CAT[40:]}]
    message = {"role": "assistant", "content": parts}
    fake_openai.push(Reply(200, {"choices": [{"message": message, "finish_reason": "stop"}]}))
    result = await local_llm.plan("a grey cat")
    assert result.layout.objects[0].caption == "a grey cat" and result.layout.negative == "dogs"


async def test_revise_shows_history_as_text_and_recognises_objects(local_llm, fake_openai):
    first = SceneLayout.model_validate(
        {
            "objects": [
                {"id": 1, "caption": "a grey cat", "box": [100, 150, 120, 100]},
                {"id": 2, "caption": "a green sofa", "box": [60, 200, 380, 220]},
                {"id": 3, "caption": "a floor lamp", "box": [450, 60, 50, 400]},
            ],
            "background": "A living room",
        }
    )
    # The model recolours the cat in place, moves the lamp, keeps the sofa and adds a bird.
    fake_openai.push_completion(
        "Objects: [('a green sofa', [60, 200, 380, 220]), ('an orange cat', [100, 150, 120, 100]), "
        "('a floor lamp', [5, 60, 50, 400]), ('a small bird', [300, 20, 60, 40])]\n"
        "Background prompt: A living room\nNegative prompt: "
    )
    result = await local_llm.revise(
        [PlanRound(instruction="a cat on a sofa", layout=first)], "orange cat, lamp left"
    )
    ids = {o.caption: o.id for o in result.layout.objects}
    assert ids == {"a green sofa": 2, "an orange cat": 1, "a floor lamp": 3, "a small bird": 4}
    messages = fake_openai.bodies[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Caption: a cat on a sofa"
    assert messages[2]["content"].startswith("Objects: [('a grey cat', [100, 150, 120, 100]),")
    assert messages[3]["content"] == "Edit: orange cat, lamp left"
