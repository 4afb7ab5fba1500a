"""Waiting jobs' statuses: "position P of N", edited when that text changes and only then."""

from __future__ import annotations

import itertools

from lmd_bot.services import PlanView, ResultView, StatusView
from tests.jobs.renderers import spec
from tests.services.conftest import ALICE, BOB, running_core

CAROL = ALICE.model_copy(update={"user_id": 4})
DAVE = ALICE.model_copy(update={"user_id": 5})


def _queued(notes, job_id: int) -> list[tuple[int | None, int | None]]:
    """The (position, waiting) of each queued status shown for the job, in order."""
    return [
        (u.position, u.waiting)
        for u in notes.updates
        if u.job.id == job_id and isinstance(u, StatusView) and u.state == "queued"
    ]


async def test_a_waiting_jobs_status_follows_the_line_and_never_repeats_itself(tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    async with running_core(tmp_path, renderer=spec("gated", folder=str(gate))) as (app, notes):
        jobs = []
        for actor, prompt in ((ALICE, "a red apple"), (BOB, "a blue cup"), (CAROL, "a green pear")):
            plan = await app.scenes.imagine(actor, prompt, notes)
            assert isinstance(plan, PlanView) and plan.job is not None
            jobs.append(plan.job)
        running, first, second = jobs
        await notes.wait_for(
            lambda u: u.job.id == running.id and isinstance(u, StatusView) and u.state == "running"
        )
        # Bob's job waits first of two: it said "1 of 1" before Carol queued, and says so no longer.
        await notes.wait_for(lambda u: u.job.id == first.id and getattr(u, "waiting", None) == 2)
        await notes.wait_for(lambda u: u.job.id == second.id and getattr(u, "position", None) == 2)
        plan = await app.scenes.imagine(DAVE, "a yellow lemon", notes)
        assert isinstance(plan, PlanView) and plan.job is not None
        await notes.wait_for(lambda u: u.job.id == first.id and getattr(u, "waiting", None) == 3)
        assert await app.scenes.cancel(CAROL, second.id) == "Cancelled."
        # Dave's job moves up to second of two.
        await notes.wait_for(lambda u: u.job.id == plan.job.id and (u.position, u.waiting) == (2, 2))
        (gate / "go").touch()
        for job in (running, first, plan.job):
            assert isinstance(await notes.result_of(job.id), ResultView)
        for job in (first, second, plan.job):
            shown = _queued(notes, job.id)
            # Each edit says something new: never the same place twice in a row.
            assert all(a != b for a, b in itertools.pairwise(shown)), shown


async def test_a_job_waiting_with_no_worker_online_says_so_instead_of_an_eta(tmp_path):
    """On the Redis queue with no `lmd-bot worker` running, a user saw "queued, position 1 of 1"
    (with an ETA once renders had been timed) for as long as none started; only the operator's
    log said why. The status says it, and says the place again once a worker serves the queue."""
    from cogs._format import status_content
    from tests.jobs.redis_server import redis_server

    with redis_server() as url:
        queue = {"backend": "redis", "redis_url": url, "redis_prefix": "noworker"}
        async with running_core(tmp_path, queue=queue) as (app, notes):
            plan = await app.scenes.imagine(ALICE, "a red apple", notes)
            waiting = await notes.wait_for(
                lambda u: isinstance(u, StatusView) and u.job.id == plan.job.id and u.note is not None
            )
            assert (waiting.state, waiting.position, waiting.eta_s) == ("queued", 1, None)
            assert status_content(waiting) == (
                "⏳ Round 1: queued, position 1 of 1.\n"
                "⚠️ No GPU worker is online right now; it starts as soon as one is."
            )
