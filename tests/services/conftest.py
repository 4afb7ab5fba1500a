"""A real core for service tests: SQLite file, local queue with a spawned worker process, the
scripted planner, and a notifier (and presenter) that records."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lmd_bot.config import load_settings
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.services import Actor, open_core
from lmd_bot.services.app import Core
from lmd_bot.testing import RecordingNotifier, ScriptedPlanner

PREVIEW = RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer")

ALICE = Actor(user_id=1, guild_id=100, channel_id=10)
BOB = Actor(user_id=2, guild_id=100, channel_id=10)
ADMIN = Actor(user_id=3, guild_id=100, channel_id=10, is_admin=True)

TINY_RENDER_S = 240  # tiny models in a spawned worker on a loaded 2-core machine
# The ✨ Refine tests' bot (service and Discord): the tiny models, refining on request with the
# tiny random SDXL-refiner-shaped model; small and fast, no SAM, GLIGEN or self-check.
TINY_REFINING = {
    "mode": "lmd",
    "steps": 4,
    "size": 128,
    "refine": "button",
    "refine_size": 256,
    "use_sam": False,
    "gligen_model": "",
    "self_check": False,
}
TINY_QUEUE = {"job_timeout_s": TINY_RENDER_S, "worker_start_timeout_s": TINY_RENDER_S}


def make_settings(tmp_path: Path, **sections: dict[str, Any]):
    base: dict[str, dict[str, Any]] = {
        "db": {"url": f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3"},
        "storage": {"image_dir": str(tmp_path / "images")},
        "discord": {"status_edit_interval_s": 0.0},
        "diffusion": {"mode": "lmd", "steps": 4},
        "queue": {"job_timeout_s": 30, "cancel_grace_s": 2, "shutdown_grace_s": 0.2},
        "guard": {"rate_limit_count": 100},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(**base)


@contextlib.asynccontextmanager
async def running_core(
    tmp_path: Path,
    renderer: RendererSpec = PREVIEW,
    planner: ScriptedPlanner | None = None,
    seeds: list[int] | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[tuple[Core, RecordingNotifier]]:
    """A started core; closed (gracefully) on exit."""
    settings = make_settings(tmp_path, **sections)
    seed_iter = iter(seeds) if seeds is not None else None
    core = await open_core(
        settings,
        planner=planner or ScriptedPlanner(),
        renderer=renderer,
        new_seed=(lambda: next(seed_iter)) if seed_iter is not None else None,
    )
    notifier = RecordingNotifier()
    core.scenes.attach(notifier)
    await core.scenes.start()
    try:
        yield core, notifier
    finally:
        await core.close()


@pytest.fixture
async def core(tmp_path):
    async with running_core(tmp_path, seeds=list(range(1000, 1100))) as pair:
        yield pair
