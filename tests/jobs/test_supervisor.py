"""The worker process and its supervisor, without the service layer: real spawned processes."""

from __future__ import annotations

import asyncio

from lmd_bot.jobs.local import LocalJobQueue
from lmd_bot.jobs.models import (
    EVENT_ADAPTER,
    CancelOutcome,
    JobDone,
    JobFailed,
    JobProgress,
    JobSpec,
    JobStarted,
    QueueChanged,
    QueueFullError,
)
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderRequest
from tests.jobs.renderers import spec

LAYOUT = SceneLayout.model_validate({"objects": [{"id": 1, "caption": "a cat", "box": [10, 10, 100, 100]}]})
PREVIEW = RendererSpec(factory="lmd_bot.jobs.renderers:preview_renderer")


def _job(job_id: int, user: int = 1, seed: int = 0, steps: int = 3) -> JobSpec:
    return JobSpec(job_id=job_id, user_id=user, request=RenderRequest(layout=LAYOUT, seed=seed, steps=steps))


async def _until(queue, kinds: tuple[type, ...], timeout: float = 20.0):
    events = []
    while True:
        event = await asyncio.wait_for(queue.next_event(), timeout)
        events.append(event)
        if isinstance(event, kinds):
            return events


async def test_preview_renderer_runs_in_the_worker_and_reports_progress():
    queue = LocalJobQueue(PREVIEW)
    await queue.start()
    try:
        await queue.submit(_job(1, steps=3))
        events = await _until(queue, (JobDone, JobFailed))
        kinds = [type(e) for e in events if not isinstance(e, QueueChanged)]
        assert kinds[0] is JobStarted and kinds[-1] is JobDone
        assert [e.step for e in events if isinstance(e, JobProgress)][-1] == 3
        done = events[-1]
        assert done.png.startswith(b"\x89PNG") and done.seconds >= 0 and not done.flagged
    finally:
        assert await queue.close(1) == []


async def test_a_renderer_that_cannot_start_fails_the_job_with_a_clear_message():
    queue = LocalJobQueue(spec("broken"), warm=False)
    await queue.start()
    try:
        await queue.submit(_job(1))
        failed = (await _until(queue, (JobDone, JobFailed)))[-1]
        assert isinstance(failed, JobFailed)
        assert failed.user_message.startswith("The renderer could not start")
        assert "no CUDA device" in failed.detail
    finally:
        await queue.close(1)


async def test_a_model_that_cannot_load_is_one_log_line_not_a_traceback(capfd):
    """A setting that names a missing model is the operator's to fix, and the error says which: the
    worker logged it with a traceback of the loading code, which ``lmd-bot chat`` printed in the
    middle of the conversation. Unexpected failures keep theirs (the test above)."""
    queue = LocalJobQueue(spec("misconfigured"), warm=False)
    await queue.start()
    try:
        await queue.submit(_job(1))
        failed = (await _until(queue, (JobDone, JobFailed)))[-1]
        assert "no such folder" in failed.detail
    finally:
        await queue.close(1)
    err = capfd.readouterr().err
    assert "the renderer could not start: cannot load the Stable Diffusion model '/models/sd'" in err, err
    assert "Traceback" not in err


async def test_after_a_failed_start_jobs_fail_at_once_until_the_back_off_has_passed():
    """Models that cannot load (offline with hub ids, a wrong folder) took the whole load attempt
    again for every job: minutes each before the same failure. Within the back-off after a failed
    start a job fails at once with that start's error; after it, the next job tries again."""
    queue = LocalJobQueue(spec("broken"), warm=True, start_backoff_s=3.0)
    await queue.start()  # the warm start fails
    try:
        await queue.submit(_job(1))
        await queue.submit(_job(2))
        failed = [(await _until(queue, (JobFailed,)))[-1] for _ in range(2)]
        assert queue.supervisor.starts == 1  # no second load for either job
        for f in failed:
            assert f.user_message.startswith("The renderer could not start")
            assert "no CUDA device" in f.detail and "next try in" in f.detail
        await asyncio.sleep(3.2)
        await queue.submit(_job(3))
        third = (await _until(queue, (JobFailed,)))[-1]
        assert queue.supervisor.starts == 2 and "next try in" not in third.detail
    finally:
        await queue.close(1)


async def test_whole_queue_cap_cancel_of_waiting_jobs_and_duplicates(tmp_path):
    queue = LocalJobQueue(spec("gated", folder=str(tmp_path)), max_queued=2)
    await queue.start()
    try:
        await queue.submit(_job(1))
        await _until(queue, (JobStarted,))
        await queue.submit(_job(2))
        await queue.submit(_job(2))  # the same job again: ignored
        await queue.submit(_job(3, user=2))
        try:
            await queue.submit(_job(4, user=3))
        except QueueFullError as exc:
            assert exc.user_message == "The queue is full right now; try again in a few minutes."
        else:
            raise AssertionError("a third waiting job should not fit")
        snap = await queue.snapshot()
        # user 1's first job is running, so user 2's goes before user 1's second (docs: fair.py)
        assert [j.job_id for j in snap.running] == [1] and [j.job_id for j in snap.queued] == [3, 2]
        assert await queue.known_jobs() == {1, 2, 3}
        assert await queue.cancel(2) == CancelOutcome.REMOVED
        assert await queue.cancel(2) == CancelOutcome.UNKNOWN
        assert await queue.cancel(1) == CancelOutcome.STOPPING
        (tmp_path / "go").touch()
    finally:
        await queue.close(2)


async def test_close_stops_a_running_job_after_the_grace_period_and_names_it(tmp_path):
    queue = LocalJobQueue(spec("hang", folder=str(tmp_path)))
    await queue.start()
    await queue.submit(_job(7))
    await _until(queue, (JobProgress,))
    aborted = await queue.close(0.2)
    assert aborted == [7]
    assert queue.supervisor.worker_pid is None


def test_events_survive_json_for_the_redis_queue():
    done = JobDone(job_id=3, png=b"\x89PNG\x00\xff", seconds=1.5, stats={"unet": 2.0}, flagged=True)
    again = EVENT_ADAPTER.validate_json(done.model_dump_json())
    assert again == done
    progress = JobProgress(job_id=3, step=1, total=2, preview_png=None)
    assert EVENT_ADAPTER.validate_json(progress.model_dump_json()) == progress
