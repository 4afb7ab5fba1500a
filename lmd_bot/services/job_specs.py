"""What a job asks of the GPU worker: the :class:`~lmd_bot.jobs.models.JobSpec` for a stored job.

A render job asks for its round's layout with the job's seed, steps and mode, refined when the
job says so. A ✨ Refine job (``job.refine_of``) carries the finished image it refines, read from
the bot's storage here, so a worker on another host needs nothing but the spec.
"""

from __future__ import annotations

from lmd_bot.config import Settings
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.errors import LmdError
from lmd_bot.jobs.models import JobSpec
from lmd_bot.rendering import RenderRequest
from lmd_bot.scenes.models import JobRecord, RoundRecord, SceneRecord
from lmd_bot.services.images import ImageStore


class SourceImageGoneError(LmdError):
    user_message = "The image to refine is no longer in the bot's storage; 🔄 Reroll renders the round again."


async def job_spec(
    settings: Settings,
    repo: Repository,
    images: ImageStore,
    scene: SceneRecord,
    round_: RoundRecord,
    job: JobRecord,
    attempt: int,
) -> JobSpec:
    """The spec to queue ``job`` with (SourceImageGoneError: a refine job's image is gone)."""
    source = None
    if job.refine_of is not None:
        try:
            path = (await repo.job(job.refine_of)).image_path
        except NotFoundError:
            path = None
        source = await images.load(path)
        if source is None:
            raise SourceImageGoneError(f"job {job.id}: job {job.refine_of}'s image is gone")
    request = RenderRequest(
        layout=round_.layout,
        prompt=scene.prompt,
        mode=job.mode,
        seed=job.seed,
        steps=job.steps,
        guidance_scale=settings.diffusion.guidance_scale,
        refine=job.refine,
        source_png=source,
        # A grid renders every candidate; a refine job refines one finished image.
        candidates=round_.candidates if source is None else 1,
    )
    return JobSpec(
        job_id=job.id, user_id=job.user_id, guild_id=job.guild_id, request=request, attempt=attempt
    )
