"""Planners wired to the fake services on 127.0.0.1, with short deadlines so failures are quick."""

import random

import pytest

from lmd_bot.layout.schema import LayoutLimits
from lmd_bot.planner.anthropic_backend import AnthropicBackend
from lmd_bot.planner.engine import LayoutPlanner
from lmd_bot.planner.openai_backend import OpenAICompatBackend
from lmd_bot.planner.retry import RetryPolicy
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_openai import FakeOpenAI

API_KEY = "test-key"
LIMITS = LayoutLimits(max_objects=16)


def make_planner(backend, **overrides) -> LayoutPlanner:
    options = {
        "limits": LIMITS,
        "max_user_text_chars": 1500,
        "deadline_s": 5.0,
        "attempt_timeout_s": 1.0,
        "max_repairs": 2,
        "retry": RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05),
        "rng": random.Random(0),
    }
    options.update(overrides)
    return LayoutPlanner(backend, **options)


def anthropic_backend(base_url: str, *, api_key: str = API_KEY, limits: LayoutLimits = LIMITS):
    return AnthropicBackend(
        api_key=api_key, model="claude-haiku-5-5", max_tokens=2000, limits=limits, base_url=base_url
    )


def openai_backend(base_url: str, *, api_key: str | None = None, limits: LayoutLimits = LIMITS):
    return OpenAICompatBackend(
        base_url=base_url, model="llama3.1", max_tokens=2000, limits=limits, api_key=api_key
    )


@pytest.fixture
async def fake_anthropic():
    async with FakeAnthropic(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture
async def fake_openai():
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def claude(fake_anthropic):
    """A planner on the Anthropic backend, talking to ``fake_anthropic``."""
    planner = make_planner(anthropic_backend(fake_anthropic.base_url))
    yield planner
    await planner.aclose()


@pytest.fixture
async def local_llm(fake_openai):
    """A planner on the OpenAI-compatible backend, talking to ``fake_openai``."""
    planner = make_planner(openai_backend(fake_openai.api_base))
    yield planner
    await planner.aclose()
