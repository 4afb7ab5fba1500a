"""Faults tried from outside, after and around a render: the image folder full or gone, the
database locked while a job's end is recorded or while a user acts, a restart with fewer queue
slots than waiting jobs. Every test checks what the user is told and that no job is left
``running`` (or ``queued`` without a queue) and none is silently dropped."""

from __future__ import annotations

import asyncio
import errno
import shutil
import sqlite3
from pathlib import Path

import pytest

from lmd_bot.commands.chat import chat
from lmd_bot.errors import ConfigError
from lmd_bot.scenes.models import JobStatus
from lmd_bot.services import FailureView, PlanView, ResultView, StatusView, Voice, open_core
from lmd_bot.testing import ScriptedPlanner
from tests.jobs.renderers import spec
from tests.services.conftest import ALICE, BOB, PREVIEW, make_settings, running_core

SAVE_FAILED = "I rendered this but couldn't save the image"
COULD_NOT_SAVE = "I couldn't save that just now; please try again in a moment."
FAST_LOCKS = {"busy_timeout_s": 0.2}  # a locked database answers in 0.2 s, not 5


async def _queued(app, notes, actor=ALICE, prompt="a red apple", seed=1):
    plan = await app.scenes.imagine(actor, prompt, notes, seed=seed)
    assert isinstance(plan, PlanView) and plan.job is not None
    return plan.job


async def _no_job_left_active(app, *users):
    for user in users:
        assert await app.repo.count_active_jobs(user.user_id) == 0


class _Lock:
    """Another connection holding the SQLite database's write lock (BEGIN EXCLUSIVE)."""

    def __init__(self, tmp_path: Path) -> None:
        self.conn = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None, check_same_thread=False)

    def __enter__(self) -> _Lock:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def __exit__(self, *exc) -> None:
        self.release()
        self.conn.close()


# --- the final step: saving and recording a finished render ----------------------------------


async def test_an_image_folder_gone_unwritable_fails_the_job_and_says_so(tmp_path):
    """The folder is replaced by a file after start-up: the render finishes, saving fails; the
    job ends failed (retryable), the user hears why, and its queue slot is free again."""
    async with running_core(tmp_path) as (app, notes):
        images = tmp_path / "images"
        shutil.rmtree(images)
        images.write_text("not a folder")
        job = await _queued(app, notes)
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView) and failure.retryable
        assert failure.message.startswith(SAVE_FAILED)
        assert (await app.repo.job(job.id)).status == JobStatus.FAILED
        await _no_job_left_active(app, ALICE)


async def test_a_full_disk_mid_write_leaves_no_partial_files(tmp_path, monkeypatch):
    """The overlay's write runs out of space: no 0-byte (or half) file stays behind, and the job
    fails loudly instead of hanging at its last step."""
    real_write = Path.write_bytes

    def disk_full_for_overlays(self: Path, data: bytes) -> int:
        if "overlay" in self.name:
            with open(self, "wb"):  # the file exists, empty, when the disk fills up
                pass
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full_for_overlays)
    async with running_core(tmp_path) as (app, notes):
        job = await _queued(app, notes)
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView) and failure.message.startswith(SAVE_FAILED)
        assert (await app.repo.job(job.id)).status == JobStatus.FAILED
        left = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
        assert left == []  # neither the image nor an empty overlay
        await _no_job_left_active(app, ALICE)


async def test_a_database_locked_while_a_job_ends_is_retried_and_the_result_delivered(tmp_path):
    """Another connection holds the write lock past busy_timeout when the job's end is written:
    the write is retried; once the lock goes, the job is done and the user gets the result."""
    gate = tmp_path / "gate"
    gate.mkdir()
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate)), db=FAST_LOCKS) as (
        app,
        notes,
    ):
        job = await _queued(app, notes)
        await notes.wait_for(
            lambda u: u.job.id == job.id and isinstance(u, StatusView) and u.state == "running"
        )
        with _Lock(tmp_path) as lock:
            (gate / "go").touch()
            await asyncio.sleep(1.0)  # the first write waits 0.2 s and fails; the lock stays
            lock.release()
        result = await notes.result_of(job.id)
        assert isinstance(result, ResultView) and result.image_png
        stored = await app.repo.job(job.id)
        assert stored.status == JobStatus.DONE and Path(stored.image_path).read_bytes() == result.image_png
        await _no_job_left_active(app, ALICE)


def test_an_unwritable_image_folder_is_refused_at_start_up(tmp_path):
    """storage.image_dir under a regular file: start-up stops with one line naming the setting."""
    (tmp_path / "file").write_text("")
    settings = make_settings(tmp_path, storage={"image_dir": str(tmp_path / "file" / "images")})

    async def start():
        core = await open_core(settings, planner=ScriptedPlanner(), renderer=PREVIEW)
        await core.close()

    with pytest.raises(ConfigError) as err:
        asyncio.run(start())
    assert "storage.image_dir" in str(err.value) and str(tmp_path / "file" / "images") in str(err.value)


# --- a locked (or full) database while a user acts --------------------------------------------


async def test_a_locked_database_during_a_user_action_is_a_clear_error_and_nothing_half_written(tmp_path):
    async with running_core(tmp_path, db=FAST_LOCKS) as (app, notes):
        with _Lock(tmp_path), pytest.raises(Exception) as err:
            await app.scenes.imagine(ALICE, "a red apple", notes)
        assert getattr(err.value, "user_message", None) == COULD_NOT_SAVE
        assert await app.repo.rounds(1) == {}  # no scene, no round
        job = await _queued(app, notes)  # the same request works once the lock is gone
        assert isinstance(await notes.result_of(job.id), ResultView)
        with _Lock(tmp_path), pytest.raises(Exception) as err:
            await app.scenes.instruct(ALICE, job.scene_id, "add a cat", notes)
        assert getattr(err.value, "user_message", None) == COULD_NOT_SAVE
        assert len(await app.repo.rounds(job.scene_id)) == 1  # no round, no job
        await _no_job_left_active(app, ALICE)


async def test_a_locked_database_when_the_render_is_queued_is_said_under_the_plan(tmp_path):
    """/imagine: the plan was shown (its thread opened), then recording the thread and the job
    hits the lock: the user hears it under the plan, no job exists, and they can try again."""
    async with running_core(tmp_path, db=FAST_LOCKS) as (app, notes):
        lock = _Lock(tmp_path)

        async def lock_after_showing(view):
            lock.__enter__()
            return await type(notes).show_plan(notes, view)

        notes.show_plan = lock_after_showing
        try:
            plan = await app.scenes.imagine(ALICE, "a red apple", notes)
        finally:
            lock.__exit__()
        assert isinstance(plan, PlanView) and plan.job is None
        assert notes.replies[-1].text == COULD_NOT_SAVE and notes.replies[-1].by is Voice.BOT
        await _no_job_left_active(app, ALICE)


async def test_lmd_bot_chat_survives_a_locked_database(tmp_path):
    core = await open_core(
        make_settings(tmp_path, db=FAST_LOCKS), planner=ScriptedPlanner(), renderer=PREVIEW
    )
    said: list[str] = []
    lock = _Lock(tmp_path)

    async def lines():
        lock.__enter__()
        yield "a red apple"
        lock.__exit__()
        yield "a blue cup"

    try:
        await chat(core, lines(), tmp_path / "out", said.append)
    finally:
        await core.close()
    assert COULD_NOT_SAVE in said
    assert any(line.startswith("round 1: a blue cup") for line in said)
    assert any("seed" in line and line.endswith(".png") for line in said)  # it rendered


# --- a restart with fewer queue slots than waiting jobs ---------------------------------------


async def test_jobs_that_no_longer_fit_the_queue_after_a_restart_are_failed_and_their_users_told(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    roomy = {"per_user_cap": 5, "max_queued": 10}
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate)), queue=roomy) as (app, notes):
        jobs = [await _queued(app, notes, actor, seed=s) for actor, s in ((ALICE, 1), (BOB, 2), (ALICE, 3))]
        await notes.wait_for(lambda u: isinstance(u, StatusView) and u.state == "running")
    # Back with room for one waiting job: the first (in queue order) is kept, the others fail.
    async with running_core(tmp_path, queue={"per_user_cap": 5, "max_queued": 1}) as (app, notes):
        kept = await notes.result_of(jobs[0].id)
        assert isinstance(kept, ResultView)
        for job in jobs[1:]:
            failure = await notes.result_of(job.id)
            assert isinstance(failure, FailureView) and failure.retryable
            assert "queue" in failure.message
            assert (await app.repo.job(job.id)).status == JobStatus.FAILED
        await _no_job_left_active(app, ALICE, BOB)


async def test_a_result_the_chat_service_refuses_at_first_is_posted_again(tmp_path):
    """Posting the result fails twice (a Discord hiccup): it is posted again, not lost."""
    async with running_core(tmp_path) as (app, notes):
        refusals = []
        post = notes.show_result

        async def flaky(view):
            if len(refusals) < 2:
                refusals.append(view.job.id)
                raise ConnectionResetError("the chat service hung up")
            return await post(view)

        notes.show_result = flaky
        job = await _queued(app, notes)
        assert isinstance(await notes.result_of(job.id), ResultView)
        assert refusals == [job.id, job.id]
        assert (await app.repo.job(job.id)).status == JobStatus.DONE


async def test_an_unexpected_error_while_finishing_a_render_fails_the_job_and_says_so(tmp_path, monkeypatch):
    """Drawing the overlay breaks (a bug, not the disk): the job still ends, failed, and its owner
    hears of it instead of waiting on "rendering" forever."""
    from lmd_bot.services.images import ImageStore

    async def broken_overlay(layout, png, missing=(), candidate_pngs=()):
        raise ValueError("cannot identify image file")

    monkeypatch.setattr(ImageStore, "result_pictures", staticmethod(broken_overlay))
    async with running_core(tmp_path) as (app, notes):
        job = await _queued(app, notes)
        failure = await notes.result_of(job.id)
        assert isinstance(failure, FailureView) and failure.message.startswith("Something went wrong")
        assert (await app.repo.job(job.id)).status == JobStatus.FAILED
        await _no_job_left_active(app, ALICE)
