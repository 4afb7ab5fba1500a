"""Grids of candidates: a round rendered at several seeds (``/imagine candidates:``, or the
server's setting) is shown as one numbered grid; picking candidate *k* continues the scene from it.

A pick renders nothing: candidate *k*'s image and overlay were saved with the grid
(:func:`~lmd_bot.services.images.candidate_paths`). It becomes a new round under the grid's round
(kind ``pick``, one candidate) whose seed is candidate *k*'s, with a job that is done already, in
one transaction; the round is the scene's head, so the next instruction renders from that seed,
and the GPU worker's per-object cache holds that seed's object runs from the grid. The result is
shown as rendered results are (a new message, its buttons, 🔄), through the render tracker.
Rerolling the grid's round rerolls every candidate (a round's reroll keeps its candidate count).
"""

from __future__ import annotations

import logging

from lmd_bot.db.records import FinishedJob
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.errors import LmdError
from lmd_bot.rendering import candidate_seeds
from lmd_bot.scenes.models import JobRecord, JobStatus, RoundKind, RoundRecord
from lmd_bot.services.errors import AlreadyPickedError, NotAGridError, NotOwnerError, SceneNotFoundError
from lmd_bot.services.images import ImageStore, candidate_paths
from lmd_bot.services.locks import KeyedLocks
from lmd_bot.services.policy import ServerPolicy
from lmd_bot.services.tracker import RenderTracker
from lmd_bot.services.views import Actor, ResultView

log = logging.getLogger(__name__)

IMAGE_GONE = "I can't find that candidate's image any more; 🔄 on the grid renders new ones."
GRID_GONE = "I can't find that grid any more."
NOT_READY = "That grid isn't finished yet: pick when it has arrived."


class CandidateService:
    def __init__(
        self, *, repo: Repository, images: ImageStore, policy: ServerPolicy, tracker: RenderTracker
    ) -> None:
        self._repo = repo
        self._images = images
        self._policy = policy
        self._tracker = tracker
        # Picks from one grid, one at a time: a second press sees the first's round.
        self._lock = KeyedLocks()

    async def pick(self, actor: Actor, job_id: int, number: int) -> ResultView:
        """Continue the scene from candidate ``number`` (1-based) of the grid job ``job_id``
        rendered: a new round with its seed and its image, shown as a result (and returned)."""
        job = await self._job(job_id)
        try:
            grid = await self._repo.round(job.round_id)
            scene = await self._repo.scene(job.scene_id)
        except NotFoundError:
            raise SceneNotFoundError(f"job {job_id}'s scene") from None
        if not await self._policy.may_edit(actor, scene):
            raise NotOwnerError(f"user {actor.user_id} may not pick in scene {scene.id}")
        if grid.candidates < 2:
            raise NotAGridError(f"job {job_id} rendered one image")
        if not 1 <= number <= grid.candidates:
            raise LmdError(
                f"candidate {number} of {grid.candidates}",
                user_message=f"This grid has {grid.candidates} candidates: pick 1 to {grid.candidates}.",
            )
        if job.status != JobStatus.DONE:
            raise LmdError(f"job {job_id} is {job.status}", user_message=NOT_READY)
        policy = await self._policy.safety(scene.guild_id, nsfw_channel=scene.nsfw)
        withheld = job.flagged and policy == "withhold"
        image_path = overlay_path = image = overlay = None
        if job.image_path is not None:
            image_path, overlay_path = candidate_paths(job.image_path, number)
            image, overlay = await self._images.load(image_path), await self._images.load(overlay_path)
        if image is None and not withheld:
            raise SceneNotFoundError(f"candidate {number} of job {job_id}: no image", user_message=IMAGE_GONE)
        seed = candidate_seeds(job.seed, grid.candidates)[number - 1]
        instruction = f"candidate {number} of round {grid.number}"
        async with self._lock(job_id):  # two presses of one grid's buttons take turns
            head = await self._head(scene.id)
            if head.kind is RoundKind.PICK and head.parent_id == grid.id and head.instruction == instruction:
                raise AlreadyPickedError(number, head.number)  # a double click: nothing new
            scene, picked_round, picked = await self._repo.add_round(
                scene_id=scene.id,
                parent_id=grid.id,
                kind=RoundKind.PICK,
                instruction=instruction,
                layout=grid.layout,
                seed=seed,
                candidates=1,
                done=FinishedJob(
                    user_id=actor.user_id,
                    guild_id=actor.guild_id,
                    mode=job.mode,
                    steps=job.steps,
                    image_path=image_path,
                    overlay_path=overlay_path,
                    flagged=job.flagged,
                    render_seconds=job.render_seconds,
                    refine=job.refine,
                ),
            )
        assert picked is not None
        log.info(
            "pick scene=%s round=%s candidate %s seed=%s -> round %s",
            scene.id,
            grid.number,
            number,
            seed,
            picked_round.number,
        )
        view = ResultView(
            scene=scene,
            round=picked_round,
            job=picked,
            image_png=None if withheld else image,
            overlay_png=None if withheld else overlay,
            spoiler=job.flagged and policy == "spoiler",
            withheld=withheld,
            render_s=job.render_seconds,
            refinable=not withheld and await self._policy.offers_refine(scene.guild_id, picked),
        )
        self._tracker.deliver(view)
        return view

    async def _head(self, scene_id: int) -> RoundRecord:
        """The scene's current round, read afresh (another press may have just moved it)."""
        try:
            return await self._repo.round((await self._repo.scene(scene_id)).head_round_id)
        except NotFoundError:
            raise SceneNotFoundError(f"scene {scene_id}", user_message=GRID_GONE) from None

    async def _job(self, job_id: int) -> JobRecord:
        try:
            return await self._repo.job(job_id)
        except NotFoundError:
            raise SceneNotFoundError(f"job {job_id}", user_message=GRID_GONE) from None
