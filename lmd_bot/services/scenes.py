"""The scene service: the bot's use cases, for any adapter (Discord, the terminal, tests).

A scene is a tree of rounds (plan, revisions, rerolls) stored in the database; each render is a
job in the GPU queue. A use case checks who may do what (:mod:`~lmd_bot.services.policy`), asks
the planner, writes its rows in one transaction where it can, shows the plan through the
adapter's :class:`~lmd_bot.services.notifier.Presenter`, and hands the render to the
:class:`~lmd_bot.services.tracker.RenderTracker`, which reports the rest to the notifier.

``/imagine`` in full: plan → store the scene → show the plan (the adapter opens the scene's
thread from it) → one transaction records the thread, links the plan message and creates the
job (refused at the user's cap) → submit → draw the plan's picture and add it. An instruction:
plan → one transaction writes the round and its job → submit → show the plan → its picture
(:mod:`~lmd_bot.services.plans`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from lmd_bot.db.records import NewJob
from lmd_bot.db.repository import NotFoundError, Repository
from lmd_bot.errors import LmdError
from lmd_bot.guard import Guard
from lmd_bot.jobs.models import CancelOutcome
from lmd_bot.layout.canvas import SQUARE_512, Aspect, Canvas, canvas_for, requested_aspect
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.planner.base import Planner
from lmd_bot.planner.manual import edit_box_text, editable_json, read_user_layout
from lmd_bot.rendering import Refine, RenderMode
from lmd_bot.scenes.diff import describe_changes
from lmd_bot.scenes.models import JobRecord, MessageKind, RoundKind, RoundRecord, SceneRecord
from lmd_bot.scenes.tree import branch_path, planner_history
from lmd_bot.services.errors import (
    NothingToUndoError,
    NotOwnerError,
    SceneNotFoundError,
    UnchangedLayoutError,
)
from lmd_bot.services.images import ImageStore
from lmd_bot.services.layout_files import AttachedFile, layout_text
from lmd_bot.services.locks import KeyedLocks
from lmd_bot.services.notifier import Notifier, Presenter
from lmd_bot.services.plans import PlanPresenter
from lmd_bot.services.policy import ServerPolicy
from lmd_bot.services.tracker import RenderTracker
from lmd_bot.services.views import (
    Actor,
    JobSummary,
    LayoutView,
    PlanView,
    QueueView,
    ReplyView,
    ResultView,
    SettingsChange,
    SettingsView,
    UndoView,
    Voice,
)

log = logging.getLogger(__name__)

UNDO_WORDS = frozenset({"undo", "/undo", "go back", "back"})
# What the planner is told a hand-written round was, in later revisions of the scene.
LAYOUT_INSTRUCTION = "I edited the layout myself"


class SceneService:
    def __init__(
        self,
        *,
        repo: Repository,
        planner: Planner,
        guard: Guard,
        images: ImageStore,
        policy: ServerPolicy,
        tracker: RenderTracker,
        new_seed: Callable[[], int] = lambda: secrets.randbelow(2**32),
    ) -> None:
        self.settings = policy.settings
        self._repo = repo
        self._planner = planner
        self._guard = guard
        self._images = images
        self._policy = policy
        self._tracker = tracker
        self._new_seed = new_seed
        self._plans = PlanPresenter(repo=repo, images=images, tracker=tracker)
        # A scene's rounds change one instruction at a time (a second one waits for the first).
        self._lock = KeyedLocks()

    # --- lifecycle (the tracker's) -------------------------------------------------------------

    def attach(self, notifier: Notifier) -> None:
        self._tracker.attach(notifier)

    async def start(self) -> None:
        await self._tracker.start()

    async def shutdown(self) -> None:
        await self._tracker.shutdown()

    @property
    def events_handled(self) -> int:
        return self._tracker.events_handled

    # --- /imagine ------------------------------------------------------------------------------

    async def check_imagine(self, actor: Actor, prompt: str) -> None:
        """Fast checks (no planner call, no writes) an adapter can run before acknowledging:
        their refusals concern the asker alone, so they may be said privately."""
        server = await self._policy.check_place(actor)
        self._guard.text.check(self._policy.user_text(prompt, "prompt"))
        self._guard.rate.check(actor.user_id)
        self._policy.check_cap(actor.user_id, server, self._tracker.active_jobs(actor.user_id))

    async def imagine(
        self,
        actor: Actor,
        prompt: str,
        presenter: Presenter,
        *,
        mode: RenderMode | None = None,
        seed: int | None = None,
        steps: int | None = None,
        aspect: Aspect | None = None,
        candidates: int | None = None,
    ) -> PlanView | ReplyView:
        """Plan a new scene (on the ``aspect``'s canvas, square by default), show the plan, and
        queue its render (a grid of ``candidates`` seeds: default the server's). A reply in words
        is shown and returned; nothing is stored then."""
        text = self._policy.user_text(prompt, "prompt")
        server = await self._policy.check_place(actor)
        count = self._policy.candidates(server, candidates)
        self._guard.text.check(text)
        self._guard.rate.hit(actor.user_id)
        self._policy.check_cap(actor.user_id, server, self._tracker.active_jobs(actor.user_id))
        log.info("imagine user=%s guild=%s prompt=%r", actor.user_id, actor.guild_id, text)
        result = await self._planner.plan(text, canvas=self._canvas(aspect or Aspect.SQUARE))
        if result.layout is None:
            reply = ReplyView.planner_answer(None, result.reply)
            await presenter.show_reply(reply)
            return reply
        self._guard.text.check_layout(result.layout)
        scene, first = await self._repo.create_scene(
            owner_id=actor.user_id,
            guild_id=actor.guild_id,
            channel_id=actor.channel_id,
            prompt=text,
            mode=self._policy.mode(server, mode),
            steps=self._policy.steps(server, steps),
            seed=seed if seed is not None else self._new_seed(),
            nsfw=actor.nsfw,
            layout=result.layout,
            notes=result.notes,
            candidates=count,
        )
        plan = PlanView(scene=scene, round=first, notes=result.notes)
        # The plan opens the scene's thread, where the job reports: shown before the job exists.
        shown = await presenter.show_plan(plan)
        try:
            scene, round_, job = await self._start_render(
                actor,
                plan.scene,
                plan.round.id,
                thread_id=shown.thread_id,
                plan_message_id=shown.message_id,
            )
        except LmdError as exc:
            # The plan is shown already: say why it will not render, where the plan is.
            log.info("scene %s round %s not queued: %s", plan.scene.id, plan.round.number, exc)
            await presenter.show_reply(ReplyView(scene=plan.scene, text=exc.user_message, by=Voice.BOT))
        else:
            plan = plan.model_copy(update={"scene": scene, "round": round_, "job": job})
        return await self._plans.add_picture(plan, shown, presenter)

    async def _start_render(
        self,
        actor: Actor,
        scene: SceneRecord,
        round_id: int,
        *,
        thread_id: int | None = None,
        plan_message_id: int | None = None,
    ) -> tuple[SceneRecord, RoundRecord, JobRecord]:
        server = await self._policy.server(scene.guild_id)
        scene, round_, job = await self._repo.start_render(
            round_id=round_id,
            job=self._new_job(actor, scene, server),
            thread_id=thread_id,
            plan_message_id=plan_message_id,
        )
        await self._tracker.submit(scene, round_, job)
        return scene, round_, job

    def _new_job(self, actor: Actor, scene: SceneRecord, server) -> NewJob:
        return NewJob(
            user_id=actor.user_id,
            guild_id=actor.guild_id,
            mode=scene.mode,
            steps=scene.steps,
            cap=self._policy.cap(server),
            refine=self._policy.refine(server) is Refine.ON,
        )

    async def _new_layout_round(
        self,
        base: RoundRecord,
        kind: RoundKind,
        instruction: str,
        layout: SceneLayout,
        notes: list[str],
        job: NewJob,
    ) -> PlanView:
        """A new layout for ``base``'s scene (a revision or the user's own) as its next round with
        the base's seed, its job created with it; the plan to show, with what changed."""
        scene, new_round, created = await self._repo.add_round(
            scene_id=base.scene_id,
            parent_id=base.id,
            kind=kind,
            instruction=instruction,
            layout=layout,
            seed=base.seed,
            notes=notes,
            job=job,
        )
        changes = describe_changes(base.layout, layout)
        return PlanView(scene=scene, round=new_round, changes=changes, notes=notes, job=created)

    # --- follow-up rounds ----------------------------------------------------------------------

    async def scene_for_thread(self, thread_id: int) -> SceneRecord | None:
        return await self._repo.scene_by_thread(thread_id)

    async def may_edit(self, actor: Actor, scene: SceneRecord) -> bool:
        return await self._policy.may_edit(actor, scene)

    async def check_editor(self, actor: Actor, round_id: int) -> RoundRecord:
        """The round, if ``actor`` may edit its scene (NotOwnerError otherwise)."""
        round_ = await self.round_record(round_id)
        await self._ensure_editor(actor, await self._scene(round_.scene_id))
        return round_

    async def instruct(
        self,
        actor: Actor,
        scene_id: int,
        instruction: str,
        presenter: Presenter,
        *,
        base_round_id: int | None = None,
    ) -> PlanView | ReplyView | UndoView:
        """Apply an instruction to the scene's current round (or ``base_round_id``, branching from
        it). A layout becomes a new round, the scene's head: shown, then queued."""
        text = self._policy.user_text(instruction, "instruction")
        if text.casefold().strip(" .!") in UNDO_WORDS:
            return await self.undo(actor, scene_id, presenter, from_round_id=base_round_id)
        async with self._lock(scene_id):
            # One read for the scene and its rounds; one transaction writes the round and its job.
            scene, rounds = await self._tree(scene_id)
            await self._ensure_editor(actor, scene)
            server = await self._policy.server(scene.guild_id)
            self._guard.text.check(text, what="instruction")
            self._guard.rate.hit(actor.user_id)
            self._policy.check_cap(actor.user_id, server, self._tracker.active_jobs(actor.user_id))
            base_id = base_round_id or scene.head_round_id
            if base_id not in rounds:
                raise SceneNotFoundError(f"round {base_id} not in scene {scene_id}")
            path = branch_path(rounds, base_id)
            base = path[-1]
            log.info("instruct scene=%s round=%s user=%s text=%r", scene_id, base.number, actor.user_id, text)
            # "make it wide": the planner lays the scene out again on the new canvas.
            aspect = requested_aspect(text)
            canvas = self._canvas(aspect) if aspect is not None else None
            result = await self._planner.revise(planner_history(path), text, canvas=canvas)
            if result.layout is None:
                reply = ReplyView.planner_answer(scene, result.reply)
                await presenter.show_reply(reply)
                return reply
            layout = result.layout
            self._guard.text.check_layout(layout)
            _ensure_changed(base, layout)
            job = self._new_job(actor, scene, server)
            plan = await self._new_layout_round(base, RoundKind.REVISE, text, layout, result.notes, job)
        return await self._plans.queue_and_show(plan, presenter)

    async def edit_layout(self, actor: Actor, round_id: int, text: str, presenter: Presenter) -> PlanView:
        """Make the user's own layout (JSON or LMD text: an edited copy of ``round_id``'s, typed in
        the edit box or from a file) the next round, branched from ``round_id``; no planner call.

        It is read, validated and repaired as a planner answer is (:mod:`lmd_bot.planner.manual`:
        ids kept, repairs in the notes shown with the plan), checked against the ban list, then
        shown and queued with the scene's seed like a revision. A text that is no layout at all
        raises :class:`~lmd_bot.errors.LayoutError`, whose message says what to fix; nothing is
        stored then.
        """
        round_ = await self.round_record(round_id)
        scene = await self._scene(round_.scene_id)
        await self._ensure_editor(actor, scene)
        server = await self._policy.server(scene.guild_id)
        self._policy.check_cap(actor.user_id, server, self._tracker.active_jobs(actor.user_id))
        async with self._lock(scene.id):
            scene, rounds = await self._tree(scene.id)
            path = branch_path(rounds, round_.id)
            base = path[-1]
            read = read_user_layout(
                text,
                base.layout,
                used_ids={o.id for r in rounds.values() for o in r.layout.objects},
                limits=self.settings.layout.limits(),
            )
            layout = read.layout
            self._guard.text.check_layout(layout)
            _ensure_changed(base, layout)
            # Counted once it is a round to render: no planner call to guard, and a text refused as
            # no layout (a typo to fix and send again) used up the user's requests.
            self._guard.rate.hit(actor.user_id)
            log.info(
                "edit layout scene=%s round=%s user=%s: %s; notes %s",
                scene.id,
                base.number,
                actor.user_id,
                layout.summary(),
                read.notes,
            )
            job = self._new_job(actor, scene, server)
            plan = await self._new_layout_round(
                base, RoundKind.LAYOUT, LAYOUT_INSTRUCTION, layout, read.notes, job
            )
        return await self._plans.queue_and_show(plan, presenter)

    async def edit_layout_file(
        self,
        actor: Actor,
        scene_id: int,
        file: AttachedFile,
        presenter: Presenter,
    ) -> PlanView:
        """A layout file posted in the scene's thread: :meth:`edit_layout` on the current round.
        The file is read only if it is small enough to be a layout."""
        text = await layout_text(file)
        round_ = await self.head_round(scene_id)
        return await self.edit_layout(actor, round_.id, text, presenter)

    async def reroll(self, actor: Actor, round_id: int) -> JobRecord:
        """Render ``round_id``'s layout with a new seed, as a new round branched from it."""
        round_ = await self.round_record(round_id)
        scene = await self._scene(round_.scene_id)
        await self._ensure_editor(actor, scene)
        server = await self._policy.server(scene.guild_id)
        self._guard.rate.hit(actor.user_id)
        seed = self._new_seed()
        async with self._lock(scene.id):
            scene, new_round, job = await self._repo.add_round(
                scene_id=scene.id,
                parent_id=round_.id,
                kind=RoundKind.REROLL,
                instruction=f"reroll of round {round_.number}",
                layout=round_.layout,
                seed=seed,
                job=self._new_job(actor, scene, server),
            )
        log.info(
            "reroll scene=%s round=%s -> round %s seed=%s", scene.id, round_.number, new_round.number, seed
        )
        await self._tracker.submit(scene, new_round, job)
        return job

    async def scene_of_message(self, message_id: int) -> SceneRecord | None:
        """The scene a message shows a round of (its plan, a status, a result), if any."""
        ref = await self._repo.message(message_id)
        return None if ref is None else await self._scene(ref.scene_id)

    async def reroll_message(self, actor: Actor, message_id: int) -> JobRecord | None:
        """A 🔄 on a message: reroll the round it shows; None if the message shows no round."""
        ref = await self._repo.message(message_id)
        if ref is None:
            return None
        return await self.reroll(actor, ref.round_id)

    async def undo(
        self, actor: Actor, scene_id: int, presenter: Presenter, *, from_round_id: int | None = None
    ) -> UndoView:
        """Go back to the parent of the current round (or of ``from_round_id``), and show it."""
        async with self._lock(scene_id):
            scene, rounds = await self._tree(scene_id)
            await self._ensure_editor(actor, scene)
            current = rounds.get(from_round_id or scene.head_round_id)  # type: ignore[arg-type]
            if current is None:
                raise SceneNotFoundError(f"round {from_round_id} not in scene {scene_id}")
            if current.parent_id is None:
                raise NothingToUndoError(f"round {current.id} has no parent")
            target = rounds[current.parent_id]
            scene = await self._repo.set_head(scene_id, target.id, target.seed)
        log.info("undo scene=%s -> round %s", scene_id, target.number)
        view = UndoView(
            scene=scene,
            round=target,
            result=await self._shown_result(scene, target),
            overlay_png=await self._images.plan_picture(target.layout),
        )
        message_id = await presenter.show_undo(view)
        if message_id is not None:
            await self._repo.link_message(
                message_id,
                scene_id=scene_id,
                round_id=target.id,
                job_id=view.result.job.id if view.result else None,
                kind=MessageKind.RESULT if view.result else MessageKind.PLAN,
            )
        return view

    async def _shown_result(self, scene: SceneRecord, round_: RoundRecord) -> ResultView | None:
        """The newest finished render of a round, read back from disk (for showing it again)."""
        job = await self._repo.latest_done_job(round_.id)
        if job is None:
            return None
        image = await self._images.load(job.image_path)
        if image is None and not job.flagged:
            return None
        policy = await self._policy.safety(scene.guild_id, nsfw_channel=scene.nsfw)
        withheld = job.flagged and policy == "withhold"
        return ResultView(
            scene=scene,
            round=round_,
            job=job,
            image_png=None if withheld else image,
            overlay_png=None if withheld else await self._images.load(job.overlay_path),
            spoiler=job.flagged and policy == "spoiler",
            withheld=withheld,
            render_s=job.render_seconds,
            reshown=True,
            # The buttons it was first posted with: ✨ for this image where the server refines on request.
            refinable=not withheld and await self._policy.offers_refine(scene.guild_id, job),
        )

    async def layout_json(self, round_id: int) -> str:
        return editable_json((await self.round_record(round_id)).layout)

    async def layout_view(self, actor: Actor, round_id: int) -> LayoutView:
        """A round's layout to show ``actor``, editable if they may edit the scene."""
        round_ = await self.round_record(round_id)
        scene = await self._scene(round_.scene_id)
        return LayoutView(
            round_id=round_.id,
            round_number=round_.number,
            json_text=editable_json(round_.layout),
            edit_text=edit_box_text(round_.layout),
            editable=await self._policy.may_edit(actor, scene),
        )

    async def head_round(self, scene_id: int) -> RoundRecord:
        """The round instructions to the scene apply to."""
        return await self.round_record((await self._scene(scene_id)).head_round_id)

    async def round_record(self, round_id: int | None) -> RoundRecord:
        try:
            return await self._repo.round(round_id)  # type: ignore[arg-type]
        except NotFoundError:
            raise SceneNotFoundError(f"round {round_id}") from None

    async def share(self, actor: Actor, scene_id: int, allow: bool) -> None:
        """Let everyone in the thread edit the scene (or only its owner again)."""
        scene = await self._scene(scene_id)
        if actor.user_id != scene.owner_id and not actor.is_admin:
            raise NotOwnerError("only the owner shares a scene")
        await self._repo.set_allow_everyone(scene_id, allow)

    # --- jobs: retry, cancel, thread gone ------------------------------------------------------

    async def retry(self, actor: Actor, job_id: int) -> tuple[JobRecord, bool]:
        """Queue a failed or cancelled job's round again, with the same seed: ``(job, queued)``.
        Once that round is queued again or rendered since, that job is returned and nothing is
        queued (Retry pressed twice renders once)."""
        old = await self._job(job_id)
        scene = await self._scene(old.scene_id)
        await self._ensure_editor(actor, scene)
        server = await self._policy.server(scene.guild_id)
        self._guard.rate.hit(actor.user_id)
        job, queued = await self._repo.start_retry(old.id, self._new_job(actor, scene, server))
        if queued:
            await self._tracker.submit(scene, await self.round_record(job.round_id), job)
        return job, queued

    async def cancel(self, actor: Actor, job_id: int) -> str:
        job = await self._job(job_id)
        if actor.user_id != job.user_id and not actor.is_admin:
            raise NotOwnerError(
                "not the job's owner", user_message="Only who queued this image can cancel it."
            )
        if not job.status.active:
            return "That job has already finished."
        if await self._tracker.cancel(job, "cancelled by its owner") == CancelOutcome.STOPPING:
            return "Stopping the render…"
        return "Cancelled."

    async def scene_closed(self, thread_id: int) -> int:
        """The thread was deleted or archived: cancel its jobs. Returns how many were active."""
        scene = await self._repo.scene_by_thread(thread_id)
        if scene is None:
            return 0
        return await self._tracker.cancel_scene(scene.id, "the thread was closed")

    # --- /queue, /info, /settings --------------------------------------------------------------

    async def queue_view(self, actor: Actor) -> QueueView:
        return await self._tracker.queue_view(actor)

    async def info(self, actor: Actor, limit: int = 10) -> list[JobSummary]:
        snap = await self._tracker.snapshot()
        out = []
        for job in await self._repo.recent_jobs_of_user(actor.user_id, limit):
            scene = await self._repo.scene(job.scene_id)
            round_ = await self._repo.round(job.round_id)
            out.append(
                JobSummary(
                    job=job,
                    prompt=scene.prompt,
                    round_number=round_.number,
                    thread_id=scene.thread_id,
                    guild_id=scene.guild_id,
                    position=snap.position(job.id),
                )
            )
        return out

    async def server_settings(self, guild_id: int) -> SettingsView:
        return await self._policy.view(guild_id)

    async def update_server_settings(self, actor: Actor, change: SettingsChange) -> SettingsView:
        """Admins only."""
        return await self._policy.update(actor, change)

    # --- internals -----------------------------------------------------------------------------

    @staticmethod
    def _canvas(aspect: Aspect) -> Canvas:
        """The canvas a scene of ``aspect`` is planned on: the planner's 512 px frame (its rules
        and examples are drawn on it), sides in multiples of 64. The image is rendered at that
        shape with its longer side ``diffusion.size`` (the same canvas at the default 512)."""
        return canvas_for(aspect, SQUARE_512.width)

    async def _ensure_editor(self, actor: Actor, scene: SceneRecord) -> None:
        if not await self._policy.may_edit(actor, scene):
            raise NotOwnerError(f"user {actor.user_id} may not edit scene {scene.id}")

    async def _scene(self, scene_id: int | None) -> SceneRecord:
        try:
            return await self._repo.scene(scene_id)  # type: ignore[arg-type]
        except NotFoundError:
            raise SceneNotFoundError(f"scene {scene_id}") from None

    async def _tree(self, scene_id: int) -> tuple[SceneRecord, dict[int, RoundRecord]]:
        try:
            return await self._repo.scene_tree(scene_id)
        except NotFoundError:
            raise SceneNotFoundError(f"scene {scene_id}") from None

    async def _job(self, job_id: int) -> JobRecord:
        try:
            return await self._repo.job(job_id)
        except NotFoundError:
            raise SceneNotFoundError(
                f"job {job_id}", user_message="I can't find that job any more."
            ) from None


def _ensure_changed(base: RoundRecord, layout: SceneLayout) -> None:
    """A new round's layout must differ from its base's: the same layout with the scene's seed is
    the same picture, a queue slot spent for nothing (rerolls are how to get another one)."""
    if layout == base.layout:
        raise UnchangedLayoutError(f"round {base.id}: the new layout is the same")
