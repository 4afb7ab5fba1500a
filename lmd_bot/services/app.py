"""Assembling the bot's core from the settings: database, planner, queue, guard, server policy,
render tracker and scene service.

``bot.py``, ``lmd-bot chat``, ``lmd-bot bench bot`` and the tests all start the core this way, so
they run the same code; each may pass its own planner or queue (the benchmark's scripted planner,
a test's fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lmd_bot.config import Settings
from lmd_bot.db import Database, Repository, open_database
from lmd_bot.guard import Guard
from lmd_bot.jobs import build_queue
from lmd_bot.jobs.base import JobQueue
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.planner.base import Planner
from lmd_bot.services.candidates import CandidateService
from lmd_bot.services.images import ImageStore
from lmd_bot.services.policy import ServerPolicy
from lmd_bot.services.refining import RefineService
from lmd_bot.services.scenes import SceneService
from lmd_bot.services.tracker import RenderTracker

log = logging.getLogger(__name__)


@dataclass
class Core:
    settings: Settings
    db: Database
    repo: Repository  # for tools and tests that inspect the record; adapters use ``scenes``
    planner: Planner
    queue: JobQueue
    scenes: SceneService
    refines: RefineService  # the ✨ Refine button's use case
    candidates: CandidateService  # picking a candidate of a grid
    closed: bool = False

    async def close(self) -> None:
        """Shut down in order: queue and service, then the planner's HTTP client, then the database.
        Calling it again does nothing."""
        if self.closed:
            return
        self.closed = True
        try:
            await self.scenes.shutdown()
        finally:
            with contextlib.suppress(Exception):
                await self.planner.aclose()
            await self.db.close()


async def open_core(
    settings: Settings,
    *,
    planner: Planner | None = None,
    queue: JobQueue | None = None,
    renderer: RendererSpec | None = None,
    new_seed: Callable[[], int] | None = None,
) -> Core:
    """Migrate the database and build everything; call ``core.scenes.start()`` once an adapter is
    attached (so updates about resumed jobs reach it)."""
    images = ImageStore(settings.storage.image_dir)
    await asyncio.to_thread(images.check_writable)
    db = open_database(settings.db.url, busy_timeout_s=settings.db.busy_timeout_s)
    try:
        await db.migrate()
        if planner is None:
            from lmd_bot.planner import build_planner

            planner = build_planner(settings)
        queue = queue or build_queue(settings, renderer)
        repo = Repository(db)
        guard = Guard(settings.guard, settings.discord)
        policy = ServerPolicy(settings=settings, repo=repo, guard=guard)
        tracker = RenderTracker(settings=settings, repo=repo, queue=queue, images=images, policy=policy)
        extra = {"new_seed": new_seed} if new_seed is not None else {}
        scenes = SceneService(
            repo=repo, planner=planner, guard=guard, images=images, policy=policy, tracker=tracker, **extra
        )
        refines = RefineService(repo=repo, guard=guard, policy=policy, tracker=tracker)
        candidates = CandidateService(repo=repo, images=images, policy=policy, tracker=tracker)
    except BaseException:
        await db.close()
        raise
    return Core(
        settings=settings,
        db=db,
        repo=repo,
        planner=planner,
        queue=queue,
        scenes=scenes,
        refines=refines,
        candidates=candidates,
    )
