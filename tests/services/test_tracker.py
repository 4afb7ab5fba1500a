"""Queueing through the service layer: caps, cancellation, fairness, crashes, timeouts, safety
and restarts, with real worker processes running the renderers of tests/jobs/renderers.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from lmd_bot.db import Repository, open_database
from lmd_bot.jobs.models import QueueFullError
from lmd_bot.scenes.models import JobStatus
from lmd_bot.services import FailureView, PlanView, ResultView, SettingsChange, StatusView
from lmd_bot.services.errors import NotOwnerError
from tests.jobs.renderers import spec
from tests.services.conftest import ADMIN, ALICE, BOB, make_settings, running_core


async def _queue(app, notes, actor=ALICE, prompt="a red apple", seed=None):
    plan = await app.scenes.imagine(actor, prompt, notes, seed=seed)
    assert isinstance(plan, PlanView) and plan.job is not None
    return plan, plan.job


async def _running(notes, job_id):
    return await notes.wait_for(
        lambda u: u.job.id == job_id and isinstance(u, StatusView) and u.state == "running"
    )


def _gated(tmp_path, gate, per_user_cap):
    return running_core(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": per_user_cap}
    )


def _gate(tmp_path):
    folder = tmp_path / "gate"
    folder.mkdir(exist_ok=True)
    return folder


async def test_full_queue_refuses_politely_and_a_cancelled_job_frees_its_slot(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": 2}
    ) as (
        app,
        notes,
    ):
        _, first = await _queue(app, notes, seed=1)
        _, second = await _queue(app, notes, seed=2)
        with pytest.raises(QueueFullError) as err:
            await app.scenes.imagine(ALICE, "a third apple", notes)
        assert err.value.user_message == (
            "You have 2 images in the queue already; I'll take more when one finishes."
        )
        await _running(notes, first.id)
        with pytest.raises(NotOwnerError):
            await app.scenes.cancel(BOB, second.id)
        assert await app.scenes.cancel(ALICE, second.id) == "Cancelled."
        assert (await app.repo.job(second.id)).status == JobStatus.CANCELLED
        cancelled = await notes.result_of(second.id)
        assert isinstance(cancelled, StatusView) and cancelled.state == "cancelled"
        _, third = await _queue(app, notes, seed=3)  # the slot is free again
        (gate / "go").touch()
        assert isinstance(await notes.result_of(first.id), ResultView)
        assert isinstance(await notes.result_of(third.id), ResultView)


async def test_cancelling_a_running_job_stops_it_and_frees_the_slot(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": 1}
    ) as (
        app,
        notes,
    ):
        _, job = await _queue(app, notes, seed=1)
        await _running(notes, job.id)
        assert await app.scenes.cancel(ALICE, job.id) == "Stopping the render…"
        final = await notes.result_of(job.id)
        assert isinstance(final, StatusView) and final.state == "cancelled"
        assert (await app.repo.job(job.id)).status == JobStatus.CANCELLED
        (gate / "go").touch()
        _, again = await _queue(app, notes, seed=2)
        assert isinstance(await notes.result_of(again.id), ResultView)


async def test_two_users_jobs_interleave(tmp_path):
    """Alice queues three, then Bob one: Bob's runs second, not fourth."""
    gate = _gate(tmp_path)
    async with running_core(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": 5}
    ) as (
        app,
        notes,
    ):
        alice = [(await _queue(app, notes, ALICE, seed=s))[1] for s in (1, 2, 3)]
        _, bob = await _queue(app, notes, BOB, seed=4)
        await _running(notes, alice[0].id)
        view = await app.scenes.queue_view(ALICE)
        assert [e.job_id for e in view.running] == [alice[0].id]
        assert [e.job_id for e in view.waiting] == [bob.id, alice[1].id, alice[2].id]
        positions = await notes.wait_for(
            lambda u: u.job.id == alice[2].id and isinstance(u, StatusView) and u.position == 3
        )
        assert positions.waiting == 3
        (gate / "go").touch()
        for job in [*alice, bob]:
            await notes.result_of(job.id)
        started = [u.job.id for u in notes.updates if isinstance(u, StatusView) and u.state == "running"]
        order = list(dict.fromkeys(started))
        assert order == [alice[0].id, bob.id, alice[1].id, alice[2].id]


async def test_queue_view_hides_prompts_from_other_servers(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        other = ALICE.model_copy(update={"user_id": 7, "guild_id": 999, "channel_id": 99})
        _, mine = await _queue(app, notes, ALICE, prompt="a secret garden")
        _, theirs = await _queue(app, notes, other, prompt="a private party")
        view = await app.scenes.queue_view(ALICE)
        entries = {e.job_id: e for e in [*view.running, *view.waiting]}
        assert entries[mine.id].prompt == "a secret garden" and entries[mine.id].same_server
        assert entries[theirs.id].prompt is None and not entries[theirs.id].same_server
        info = await app.scenes.info(ALICE)
        assert [s.job.id for s in info] == [mine.id] and info[0].prompt == "a secret garden"
        (gate / "go").touch()
        await notes.result_of(theirs.id)


async def test_a_worker_killed_mid_job_is_replaced_and_the_user_told(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        _, job = await _queue(app, notes, seed=1)
        await _running(notes, job.id)
        supervisor = app.queue.supervisor
        first_pid = supervisor.worker_pid
        os.kill(first_pid, signal.SIGKILL)
        # The retry starts within moments: its "running" statuses keep saying why.
        told = await notes.wait_for(lambda u: isinstance(u, StatusView) and u.note is not None)
        assert "stopped unexpectedly" in told.note and "retrying" in told.note
        assert told.state in ("retrying", "running")
        (gate / "go").touch()
        result = await notes.result_of(job.id)
        assert isinstance(result, ResultView)
        assert supervisor.worker_pid != first_pid and supervisor.starts == 2
        assert (await app.repo.job(job.id)).attempts == 2


async def test_a_worker_that_keeps_crashing_fails_the_job_with_a_retry(tmp_path):
    async with running_core(tmp_path, renderer=spec("always_crash", folder=str(tmp_path))) as (app, notes):
        _, job = await _queue(app, notes, seed=1)
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView) and failure.retryable
        assert failure.message == "Rendering failed: the GPU worker stopped unexpectedly."
        assert (await app.repo.job(job.id)).status == JobStatus.FAILED
        retried, queued = await app.scenes.retry(ALICE, job.id)
        assert queued and retried.id != job.id
        assert retried.seed == job.seed and retried.round_id == job.round_id


async def test_out_of_memory_is_retried_on_a_fresh_worker(tmp_path):
    async with running_core(tmp_path, renderer=spec("oom_once", folder=str(tmp_path))) as (app, notes):
        _, job = await _queue(app, notes, seed=1)
        told = await notes.wait_for(lambda u: isinstance(u, StatusView) and u.note is not None)
        assert told.note.startswith("Rendering failed (out of GPU memory)")
        assert isinstance(await notes.result_of(job.id), ResultView)


async def test_a_job_past_its_timeout_is_stopped_and_the_worker_replaced(tmp_path):
    queue = {"job_timeout_s": 0.5, "cancel_grace_s": 0.3}
    async with running_core(tmp_path, renderer=spec("hang", folder=str(tmp_path)), queue=queue) as (
        app,
        notes,
    ):
        _, job = await _queue(app, notes, seed=1)
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView)
        assert failure.message == "Rendering took longer than 0.5 s and was stopped."
        assert app.queue.supervisor.worker_pid is None  # killed; the next job starts a fresh one


async def test_a_deleted_thread_cancels_its_jobs(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(
        tmp_path, renderer=spec("gated", folder=str(gate)), queue={"per_user_cap": 3}
    ) as (
        app,
        notes,
    ):
        plan, running = await _queue(app, notes, seed=1)
        waiting = await app.scenes.reroll(ALICE, plan.round.id)  # a second job of the same scene
        await _running(notes, running.id)
        assert await app.scenes.scene_closed(plan.scene.thread_id) == 2
        await notes.result_of(running.id)
        for job in (running, waiting):
            assert (await app.repo.job(job.id)).status == JobStatus.CANCELLED
        assert await app.repo.count_active_jobs(ALICE.user_id) == 0


async def test_a_thread_found_gone_while_posting_cancels_the_scene(tmp_path):
    """The first write that finds the thread gone ends the scene, and nothing more is tried there:
    not the running job's result, not the waiting job's "cancelled" (on Discord, each try of a
    locked thread was another refused request to reopen it)."""
    gate = _gate(tmp_path)
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        plan, job = await _queue(app, notes, seed=1)
        waiting = await app.scenes.reroll(ALICE, plan.round.id)
        await _running(notes, job.id)
        notes.gone_threads.add(plan.scene.thread_id)
        (gate / "go").touch()
        for _ in range(200):
            if (await app.repo.job(job.id)).status != JobStatus.RUNNING:
                break
            await asyncio.sleep(0.02)
        assert (await app.repo.job(job.id)).status in (JobStatus.DONE, JobStatus.CANCELLED)
        assert (await app.repo.job(waiting.id)).status == JobStatus.CANCELLED
        assert await app.repo.count_active_jobs(ALICE.user_id) == 0
        refused = len(notes.refused)
        notes.gone_threads.clear()  # the bot was let back in: a new render there is shown
        (gate / "go").touch()
        again = await app.scenes.reroll(ALICE, plan.round.id)
        assert isinstance(await notes.result_of(again.id), ResultView)
    assert refused == len(notes.refused) == 1, notes.refused  # close waited for every update


@pytest.mark.parametrize(
    ("policy", "nsfw", "spoiler", "withheld"),
    [("spoiler", False, True, False), ("withhold", False, False, True), ("withhold", True, False, False)],
)
async def test_flagged_outputs_follow_the_safety_policy(tmp_path, policy, nsfw, spoiler, withheld):
    from lmd_bot.jobs.renderers import RendererSpec

    flagging = RendererSpec(
        factory="lmd_bot.jobs.renderers:preview_renderer",
        safety_checker="tests.jobs.renderers:flagging_checker",
    )
    async with running_core(tmp_path, renderer=flagging, guard={"safety_policy": policy}) as (app, notes):
        actor = ALICE.model_copy(update={"nsfw": nsfw})
        _, job = await _queue(app, notes, actor)
        result = await notes.result_of(job.id)
        assert isinstance(result, ResultView)
        assert (result.spoiler, result.withheld) == (spoiler, withheld)
        assert (result.image_png is None) == withheld
        assert (await app.repo.job(job.id)).flagged


async def test_settings_are_admin_only_and_stored(tmp_path):
    async with running_core(tmp_path) as (app, notes):
        with pytest.raises(Exception) as err:
            await app.scenes.update_server_settings(ALICE, SettingsChange(steps=10))
        assert "admins" in err.value.user_message
        change = SettingsChange(steps=12, safety="withhold", per_user_cap=1)
        view = await app.scenes.update_server_settings(ADMIN, change)
        assert (view.steps, view.safety, view.per_user_cap) == (12, "withhold", 1)
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        assert plan.scene.steps == 12
    async with running_core(tmp_path) as (app, notes):  # a restart reads them back from the database
        view = await app.scenes.server_settings(100)
        assert (view.steps, view.safety, view.per_user_cap) == (12, "withhold", 1)
        reset = await app.scenes.update_server_settings(ADMIN, SettingsChange(reset=True))
        assert reset.steps == 4  # the configured default


async def test_restart_resumes_queued_jobs_and_retries_the_running_one_once(tmp_path):
    """The bot process is killed with one job running and one waiting: after a restart both
    render, and the owner hears that the interrupted one is being retried."""
    _gate(tmp_path)
    bot = subprocess.Popen(
        [sys.executable, "-m", "tests.services.crashing_bot", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill takes its worker too
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(bot.stdout.readline), 60)
        running_id, waiting_id = map(int, line.split())
    finally:
        os.killpg(bot.pid, signal.SIGKILL)
        bot.wait()
    async with running_core(tmp_path) as (app, notes):
        told = await notes.wait_for(lambda u: u.job.id == running_id and isinstance(u, StatusView) and u.note)
        assert "restarted" in told.note
        assert isinstance(await notes.result_of(running_id), ResultView)
        assert isinstance(await notes.result_of(waiting_id), ResultView)
        assert (await app.repo.job(running_id)).attempts == 2
        assert (await app.repo.job(waiting_id)).attempts == 1


async def test_a_job_interrupted_twice_is_reported_not_retried_forever(tmp_path):
    settings = make_settings(tmp_path)
    async with running_core(tmp_path) as (app, notes):
        plan = await app.scenes.imagine(ALICE, "a red apple", notes)
    db = open_database(settings.db.url)
    repo = Repository(db)
    job = await repo.create_job(
        scene_id=plan.scene.id,
        round_id=plan.round.id,
        user_id=1,
        guild_id=100,
        mode=plan.scene.mode,
        steps=4,
        seed=1,
    )
    await repo.update_job(job.id, status=JobStatus.RUNNING, attempts=2)
    await db.close()
    async with running_core(tmp_path) as (app, notes):
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView) and "restarted" in failure.message
        assert (await app.repo.job(job.id)).status == JobStatus.FAILED


async def test_graceful_shutdown_requeues_the_running_job_without_counting_it(tmp_path):
    gate = _gate(tmp_path)
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        _, job = await _queue(app, notes, seed=1)
        await _running(notes, job.id)
    settings = make_settings(tmp_path)
    db = open_database(settings.db.url)
    stored = await Repository(db).job(job.id)
    await db.close()
    assert stored.status == JobStatus.QUEUED and stored.attempts == 0
    async with running_core(tmp_path) as (app, notes):
        assert isinstance(await notes.result_of(job.id), ResultView)
        assert (await app.repo.job(job.id)).attempts == 1
