"""Running a planner over the benchmark: concurrency, resuming, failures, cost."""

import asyncio
import json

import pytest

from lmd_bot.cli import main
from lmd_bot.errors import PlannerError
from lmd_bot.eval.cost import estimate_cost, usage_cost
from lmd_bot.eval.layouts import evaluate_layouts
from lmd_bot.eval.planning import pending_calls, plan_benchmark
from lmd_bot.eval.prompts import lmd_benchmark_prompts
from lmd_bot.eval.report import Run
from lmd_bot.layout import read_lmd_text
from lmd_bot.planner.base import PlanResult, Usage
from tests.eval.answers import correct_answer

PROMPTS = lmd_benchmark_prompts()


class ScriptedPlanner:
    """A Planner that answers each benchmark prompt correctly, after a short await, and can be told
    to fail for some prompts. It records how many calls ran at once."""

    def __init__(self, fail_on=()):
        self.by_prompt = {p.prompt: p for p in PROMPTS}
        self.fail_on = set(fail_on)
        self.calls = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def plan(self, prompt):
        self.calls.append(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if prompt in self.fail_on:
                raise PlannerError("overloaded")
            layout = read_lmd_text(correct_answer(self.by_prompt[prompt])).layout
            return PlanResult(layout=layout, usage=Usage(input_tokens=1000, output_tokens=100))
        finally:
            self.in_flight -= 1

    async def revise(self, history, instruction):
        raise NotImplementedError

    async def aclose(self):
        pass


async def test_planning_runs_every_prompt_within_the_concurrency_limit(tmp_path):
    planner = ScriptedPlanner()
    path = tmp_path / "responses.json"
    run = await plan_benchmark(planner, PROMPTS, path, concurrency=3)
    assert len(planner.calls) == 400
    assert planner.max_in_flight == 3
    assert run.planned == 400
    assert run.usage == Usage(input_tokens=400_000, output_tokens=40_000)
    saved = json.loads(path.read_text())
    assert len(saved) == 250  # unique prompts, as in the reference's published caches
    assert sum(len(v) for v in saved.values()) == 400
    accuracy = Run(name="fake", items=evaluate_layouts(PROMPTS, saved)).accuracies()
    assert accuracy["average"] == 100.0


async def test_planning_resumes_and_retries_only_what_is_missing(tmp_path):
    path = tmp_path / "responses.json"
    negation = PROMPTS[0].prompt
    first = await plan_benchmark(ScriptedPlanner(fail_on={negation}), PROMPTS, path, concurrency=4)
    assert first.planned == 390
    assert first.failures == {negation: ["planner error: " + PlannerError.user_message] * 10}
    results = evaluate_layouts(PROMPTS, first.responses, failures=first.failures)
    assert [r.passed for r in results[:10]] == [False] * 10
    assert all(r.passed for r in results[10:])

    assert pending_calls(PROMPTS, json.loads(path.read_text())) == [negation] * 10
    again = ScriptedPlanner()
    second = await plan_benchmark(again, PROMPTS, path, concurrency=4)
    assert again.calls == [negation] * 10
    assert second.planned == 10 and not second.failures
    assert len(json.loads(path.read_text())[negation]) == 10


def test_cost_estimate_uses_the_model_price():
    estimate = estimate_cost("claude-haiku-5-5", 400, input_tokens_per_call=2000, output_tokens_per_call=500)
    # 800k input tokens at $0.10/MTok + 200k output tokens at $0.50/MTok
    assert estimate.usd == pytest.approx(0.08 + 0.10)
    assert "400 planner calls" in estimate.describe() and "$0.18" in estimate.describe()
    assert estimate_cost("llama3.1", 10).usd is None
    assert "no price known" in estimate_cost("llama3.1", 10).describe()
    usage = Usage(
        input_tokens=1_000_000, output_tokens=0, cache_read_tokens=1_000_000, cache_write_tokens=1_000_000
    )
    assert usage_cost("claude-sonnet-5-5", usage) == pytest.approx(2.0 + 0.2 + 2.5)


def test_planner_run_asks_before_spending(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert main(["eval", "layouts", "--planner", "anthropic", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "400 of 400 prompts still need a layout" in err
    assert "Add --yes to start" in err
    assert not (tmp_path / "responses.json").exists()


class _FakeClaudeThread:
    """FakeAnthropic served from its own event loop in a thread, so the synchronous CLI can call it.
    Every request gets the correct layout for the benchmark prompt found in its messages."""

    def __init__(self, api_key):
        import threading

        self.api_key = api_key
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self):
        from tests.eval.answers import correct_objects
        from tests.fakes import Reply
        from tests.fakes.fake_anthropic import FakeAnthropic, layout_answer

        by_prompt = {p.prompt: p for p in PROMPTS}

        def body(request):
            text = json.dumps(request.body["messages"], ensure_ascii=False)
            item = by_prompt[max((p for p in by_prompt if p in text), key=len)]
            negative = f"{item.facts.object}s" if item.task == "negation" else ""
            answer = layout_answer(correct_objects(item), negative=negative)
            return {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": request.body["model"],
                "content": [{"type": "text", "text": answer}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1000, "output_tokens": 100},
            }

        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with FakeAnthropic(api_key=self.api_key) as fake:
            fake.always = Reply(200, body)
            self.fake = fake
            self.ready.set()
            await self.stop.wait()

    def __enter__(self):
        self.thread.start()
        self.ready.wait(10)
        return self.fake

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_eval_layouts_with_the_real_planner_against_a_fake_claude(tmp_path, monkeypatch, capsys):
    """`--planner anthropic` end to end: the real planner and SDK, a fake Messages API on 127.0.0.1."""
    with _FakeClaudeThread(api_key="test-key") as fake:
        monkeypatch.setenv("LMD_PLANNER__API_KEY", "test-key")
        monkeypatch.setenv("LMD_PLANNER__BASE_URL", fake.base_url)
        monkeypatch.setenv("LMD_PLANNER__MODEL", "claude-haiku-5-5")
        args = [
            "eval",
            "layouts",
            "--planner",
            "anthropic",
            "--out",
            str(tmp_path),
            "--concurrency",
            "8",
            "--yes",
        ]
        assert main(args) == 0
        assert len(fake.received) == 400
        # Resuming: nothing left to plan, no request made.
        assert main(args) == 0
        assert len(fake.received) == 400
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["accuracy"]["anthropic claude-haiku-5-5"]["average"] == 100.0
    assert sum(len(v) for v in json.loads((tmp_path / "responses.json").read_text()).values()) == 400
    err = capsys.readouterr().err
    assert "400 of 400 prompts still need a layout: 400 planner calls" in err
    assert "all 400 prompts have a recorded layout" in err
