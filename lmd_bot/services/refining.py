"""The ✨ Refine use case: SDXL refinement of a finished image, on request
(``diffusion.refine = "button"``, or a server's ``/settings refine``; docs/method.md, "SDXL
refinement").

Pressing ✨ on a result queues a refine job for that result's image: the same round, seed, steps
and mode, with the image itself in the job (nothing is rendered again, so every object stays
where the layout put it). Its result is a new result message of the same round; the scene's
rounds, head and layout do not change. A second press, while the job waits, runs, or after it is
done, queues nothing and returns that job.
"""

from __future__ import annotations

import logging

from lmd_bot.db.records import NewJob
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.guard import Guard
from lmd_bot.rendering import Refine
from lmd_bot.scenes.models import JobRecord, JobStatus
from lmd_bot.services.errors import (
    GridNotRefinableError,
    NotOwnerError,
    NotRefinableError,
    RefineOffError,
    SceneNotFoundError,
)
from lmd_bot.services.policy import ServerPolicy
from lmd_bot.services.tracker import RenderTracker
from lmd_bot.services.views import Actor

log = logging.getLogger(__name__)


class RefineService:
    def __init__(
        self, *, repo: Repository, guard: Guard, policy: ServerPolicy, tracker: RenderTracker
    ) -> None:
        self._repo = repo
        self._guard = guard
        self._policy = policy
        self._tracker = tracker

    async def refine(self, actor: Actor, job_id: int) -> tuple[JobRecord, bool]:
        """Queue the refinement of ``job_id``'s image; ``(job, queued)``, where ``queued`` is
        False when an earlier press's job is returned instead."""
        try:
            source = await self._repo.job(job_id)
            scene = await self._repo.scene(source.scene_id)
            round_ = await self._repo.round(source.round_id)
        except NotFoundError:
            raise SceneNotFoundError(
                f"job {job_id}", user_message="I can't find that image any more."
            ) from None
        if not await self._policy.may_edit(actor, scene):
            raise NotOwnerError(f"user {actor.user_id} may not refine in scene {scene.id}")
        server = await self._policy.server(scene.guild_id)
        if self._policy.refine(server) is Refine.OFF:
            raise RefineOffError(f"refinement is off for guild {scene.guild_id}")
        if source.status != JobStatus.DONE or source.refine or source.image_path is None:
            raise NotRefinableError(f"job {job_id} is {source.status}, refined={source.refine}")
        if round_.candidates > 1:  # the refiner takes one image; a grid's job holds several
            raise GridNotRefinableError(f"job {job_id} is a grid of {round_.candidates} candidates")
        self._guard.rate.hit(actor.user_id)
        new = NewJob(
            user_id=actor.user_id,
            guild_id=actor.guild_id,
            mode=source.mode,
            steps=source.steps,
            cap=self._policy.cap(server),
            refine=True,
        )
        job, created = await self._repo.start_refine(job_id, new)
        if created:
            log.info("refine scene=%s round=%s job=%s -> job %s", scene.id, round_.number, job_id, job.id)
            await self._tracker.submit(scene, round_, job)
        return job, created
