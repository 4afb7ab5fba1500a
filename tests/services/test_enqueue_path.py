"""The path from an instruction to its queued job (issue 15, bot latency): one write
transaction, the job queued before the plan is shown, the plan's picture drawn after both, and
many users at once never waiting on SQLite's lock. Speed itself is measured by
``lmd-bot bench bot``, not here."""

from __future__ import annotations

import asyncio

from lmd_bot.services import Actor, PlanShown, PlanView
from lmd_bot.testing import PlanPicture, RecordingNotifier
from tests.jobs.renderers import spec
from tests.services.conftest import ALICE, running_core


class QueueWatchingPresenter(RecordingNotifier):
    """Records, when the plan and its picture are shown, which jobs the queue holds and how many
    transactions the use case (the task showing the plan) has run: ``("write"|"read", task)`` for
    each transaction of any task, in ``app.db``'s order."""

    def __init__(self, app) -> None:
        super().__init__()
        self.app = app
        self.seen: list[tuple[str, set[int], int]] = []
        self.transactions: list[tuple[str, asyncio.Task | None]] = []
        for kind in ("write", "read"):
            run = getattr(app.db, kind)

            async def counted(work, kind=kind, run=run):
                self.transactions.append((kind, asyncio.current_task()))
                return await run(work)

            setattr(app.db, kind, counted)

    def mine(self, kind: str) -> int:
        """This task's transactions of ``kind`` so far."""
        return sum(1 for k, task in self.transactions if k == kind and task is asyncio.current_task())

    async def _look(self, what: str) -> None:
        snap = await self.app.queue.snapshot()
        queued = {j.job_id for j in [*snap.queued, *snap.running]}
        self.seen.append((what, queued, self.mine("write")))

    async def show_plan(self, view: PlanView) -> PlanShown:
        await self._look("plan")
        return await super().show_plan(view)

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        await self._look("picture")
        await super().show_plan_picture(view, shown)


async def test_an_instruction_queues_its_job_in_one_transaction_then_shows_the_plan_then_its_picture(
    tmp_path,
):
    gate = tmp_path / "gate"
    gate.mkdir()  # renders wait here: the jobs stay in the queue while we look
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        first = await app.scenes.imagine(ALICE, "a red apple, a blue cup", notes)
        watcher = QueueWatchingPresenter(app)
        revised = await app.scenes.instruct(ALICE, first.scene.id, "move cup right", watcher)
        assert isinstance(revised, PlanView) and revised.job is not None
        (plan_at, queued_at_plan, writes_at_plan), (picture_at, queued_at_picture, _) = watcher.seen
        assert (plan_at, picture_at) == ("plan", "picture")
        # Queued before the plan is shown, after one transaction (the round with its job).
        assert revised.job.id in queued_at_plan and revised.job.id in queued_at_picture
        assert writes_at_plan == 1
        assert watcher.mine("write") == 2  # and the plan message's link, after
        # The scene with its rounds; the user's active jobs are counted where they are followed.
        assert watcher.mine("read") == 1
        # The user sees the plan's words, then its picture on the same message.
        shown_plan, picture = watcher.shown
        assert isinstance(shown_plan, PlanView) and shown_plan.overlay_png is None
        assert isinstance(picture, PlanPicture) and picture.plan.round.id == revised.round.id
        assert picture.plan.overlay_png and picture.plan.overlay_png == revised.overlay_png
        (gate / "go").touch()


async def test_many_users_at_once_all_get_their_jobs_and_no_write_waits_for_a_lock(tmp_path):
    """Twelve users imagine and instruct at the same moment, with a busy timeout far shorter than
    a write queue would need: every instruction is queued, none meets a locked database."""
    users = [Actor(user_id=100 + n, guild_id=100, channel_id=10) for n in range(12)]
    async with running_core(tmp_path, db={"busy_timeout_s": 0.05}, queue={"per_user_cap": 5}) as (
        app,
        notes,
    ):

        async def user(actor: Actor) -> list[int]:
            plan = await app.scenes.imagine(actor, "a red apple, a blue cup", notes)
            jobs = [plan.job.id]
            for words in ("move cup right", "move apple left"):
                revised = await app.scenes.instruct(actor, plan.scene.id, words, notes)
                assert isinstance(revised, PlanView) and revised.job is not None, revised
                jobs.append(revised.job.id)
            return jobs

        jobs = [j for batch in await asyncio.gather(*(user(u) for u in users)) for j in batch]
        assert len(set(jobs)) == 36
        assert app.db.waits == 0 and not notes.replies
        for job_id in jobs:
            assert type(await notes.result_of(job_id)).__name__ == "ResultView"
