"""Building the configured planner from the settings (the bot and the CLI call this)."""

from __future__ import annotations

from lmd_bot.config import Settings, require_secret
from lmd_bot.planner.backend import Backend
from lmd_bot.planner.base import Planner
from lmd_bot.planner.retry import RetryPolicy


def build_planner(settings: Settings) -> Planner:
    """The planner of ``settings.planner.backend``; a missing key raises ConfigError naming it.

    Imports the chosen backend's client library here, so importing :mod:`lmd_bot.planner` stays
    cheap.
    """
    from lmd_bot.planner.engine import LayoutPlanner

    p = settings.planner
    limits = settings.layout.limits()
    backend: Backend
    if p.backend == "anthropic":
        from lmd_bot.planner.anthropic_backend import AnthropicBackend

        key = require_secret(
            p.api_key,
            "planner.api_key",
            "Create a key at https://platform.claude.com/ (Settings -> API keys), or set "
            "LMD_PLANNER__BACKEND=openai to plan with a local OpenAI-compatible server such as Ollama.",
        )
        backend = AnthropicBackend(
            api_key=key,
            model=p.model,
            max_tokens=p.max_tokens,
            limits=limits,
            base_url=p.base_url,
            effort=None if p.effort == "default" else p.effort,
            thinking=None if p.thinking == "default" else p.thinking,
        )
    else:
        from lmd_bot.planner.openai_backend import OpenAICompatBackend

        key = p.openai_api_key.get_secret_value().strip() if p.openai_api_key else ""
        backend = OpenAICompatBackend(
            base_url=p.openai_base_url,
            model=p.openai_model,
            max_tokens=p.max_tokens,
            limits=limits,
            api_key=key or None,
        )
    return LayoutPlanner(
        backend,
        limits=limits,
        max_user_text_chars=settings.layout.max_user_text_chars,
        deadline_s=p.deadline_s,
        attempt_timeout_s=p.attempt_timeout_s,
        max_repairs=p.max_repairs,
        retry=RetryPolicy(max_retries=p.max_retries),
    )
