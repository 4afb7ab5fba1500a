"""The queue interface the services use; :mod:`local` and :mod:`redis` implement it."""

from __future__ import annotations

from typing import Protocol

from lmd_bot.jobs.models import CancelOutcome, JobEvent, JobSpec, QueueSnapshot


class JobQueue(Protocol):
    async def start(self) -> None:
        """Start taking jobs (and warm the worker where the queue owns one)."""

    async def submit(self, spec: JobSpec) -> None:
        """Queue a job; a job id the queue already holds is ignored. Raises
        :class:`~lmd_bot.jobs.models.QueueFullError` when the whole queue is full."""

    async def cancel(self, job_id: int) -> CancelOutcome: ...

    async def snapshot(self) -> QueueSnapshot: ...

    async def known_jobs(self) -> set[int]:
        """Ids of the jobs the queue holds, waiting or running (after a restart of the bot, the
        in-process queue knows none; a Redis queue may still hold some)."""

    async def next_event(self) -> JobEvent:
        """The next event, in order per job. Safe to cancel: no event is lost."""

    async def close(self, grace_s: float) -> list[int]:
        """Stop taking jobs; give the running one ``grace_s`` seconds to finish, then stop it
        without reporting it. Returns the ids of the jobs so stopped (the caller requeues them)."""
