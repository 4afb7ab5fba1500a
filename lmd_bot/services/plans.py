"""Showing a new round's plan once its job is stored: queue the job, show the plan, link its
message, then draw the plan's picture and add it.

The job is queued first and the picture drawn last: drawing a layout and encoding it as PNG takes
milliseconds to tens of milliseconds of CPU, which would otherwise delay every render behind it.
The user sees the plan's words at once and its picture moments later, on the same message.
"""

from __future__ import annotations

import logging

from lmd_bot.db.repository import Repository
from lmd_bot.errors import LmdError
from lmd_bot.scenes.models import MessageKind
from lmd_bot.services.images import ImageStore
from lmd_bot.services.notifier import Presenter
from lmd_bot.services.tracker import RenderTracker
from lmd_bot.services.views import PlanShown, PlanView, ReplyView, Voice

log = logging.getLogger(__name__)

NOT_SHOWN = "the plan could not be shown"


class PlanPresenter:
    def __init__(self, *, repo: Repository, images: ImageStore, tracker: RenderTracker) -> None:
        self._repo = repo
        self._images = images
        self._tracker = tracker

    async def queue_and_show(self, plan: PlanView, presenter: Presenter) -> PlanView:
        """``plan``'s job (stored with its round) queued, then the plan shown, its message linked
        to the round, and its picture added. A job the queue refuses is marked failed by the
        tracker: the plan is shown with the reason under it, and returned without a job."""
        job = plan.job
        assert job is not None
        refused: LmdError | None = None
        try:
            await self._tracker.submit(plan.scene, plan.round, job)
        except LmdError as exc:
            log.info("scene %s round %s not queued: %s", plan.scene.id, plan.round.number, exc)
            refused, plan = exc, plan.model_copy(update={"job": None})
        try:
            shown = await presenter.show_plan(plan)
        except BaseException:
            if refused is None:  # not shown: the job must not render unseen
                await self._tracker.cancel(job, NOT_SHOWN, notify=False)
            raise
        if refused is not None:
            await presenter.show_reply(ReplyView(scene=plan.scene, text=refused.user_message, by=Voice.BOT))
        elif shown.message_id is not None:
            try:
                await self._repo.link_message(
                    shown.message_id,
                    scene_id=plan.scene.id,
                    round_id=plan.round.id,
                    job_id=None,
                    kind=MessageKind.PLAN,
                )
            except LmdError as exc:  # the job runs; only a reaction on the plan message finds nothing
                log.warning(
                    "plan message %s of scene %s not linked: %s", shown.message_id, plan.scene.id, exc
                )
        return await self.add_picture(plan, shown, presenter)

    async def add_picture(self, plan: PlanView, shown: PlanShown, presenter: Presenter) -> PlanView:
        """Draw ``plan``'s picture and add it to its shown message; the plan, with the picture."""
        plan = plan.model_copy(update={"overlay_png": await self._images.plan_picture(plan.round.layout)})
        try:
            await presenter.show_plan_picture(plan, shown)
        except Exception:  # the words are shown and the job queued: a missing picture is no failure
            log.warning(
                "scene %s round %s: the plan's picture was not shown",
                plan.scene.id,
                plan.round.number,
                exc_info=True,
            )
        return plan
