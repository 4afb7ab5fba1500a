"""Runs jobs on one GPU worker process and keeps that process alive.

The supervisor lives on the bot's event loop but never blocks it: the worker is a separate
process (``spawn``), its messages arrive through a reader thread, and waits are asyncio waits.
It owns the failure policy:

- the worker crashes or runs out of memory: it is replaced by a fresh process and the job is
  tried again, up to ``max_attempts`` tries; the user hears of each retry;
- a job runs past ``job_timeout_s``: the worker is asked to stop, then killed after
  ``cancel_grace_s`` if it does not; the job fails and can be retried by the user;
- a cancelled job: the same stop-then-kill, reported as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from lmd_bot.config import QueueSettings
from lmd_bot.errors import OutOfMemoryError
from lmd_bot.jobs.models import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSpec,
    JobStarted,
)
from lmd_bot.jobs.process import worker_main
from lmd_bot.jobs.protocol import (
    FailureReason,
    Fatal,
    Inbox,
    Poke,
    Progress,
    Ready,
    Rendered,
    RenderFailed,
    RunJob,
    Stop,
    WorkerExited,
)
from lmd_bot.jobs.renderers import RendererSpec

log = logging.getLogger(__name__)

CRASH_MESSAGE = "Rendering failed: the GPU worker stopped unexpectedly."
START_MESSAGE = "The renderer could not start; the bot's admin can find why in its log."
_MAX_BACKOFF_S = 900.0  # the longest a failed start keeps jobs from trying another


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    inbox: asyncio.Queue[Inbox]
    busy: bool = False  # a job was sent and its end not yet received


class _End(StrEnum):
    """How one attempt at a job ended."""

    DONE = "done"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # past job_timeout_s; stopped
    ERROR = "error"  # the renderer failed; the worker lives on
    OUT_OF_MEMORY = "out_of_memory"  # retried on a fresh worker
    CRASH = "crash"  # the worker process died; retried on a fresh one
    START_FAILED = "start_failed"  # no worker could be started
    ABORTED = "aborted"  # shutdown: the queue's owner requeues the job


@dataclass(frozen=True)
class _Outcome:
    end: _End
    rendered: Rendered | None = None  # with DONE
    user_message: str = ""  # with ERROR: the renderer's own words
    detail: str = ""


def _read_forever(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[Inbox]) -> None:
    """Reader thread: hand each message to the loop; WorkerExited when the worker is gone."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = WorkerExited()
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return
        if isinstance(message, WorkerExited):
            return


def supervisor_limits(queue: QueueSettings) -> dict[str, float]:
    """The supervisor's limits as the queue settings give them: the embedded queue's worker and
    ``lmd-bot worker``'s run under the same ones."""
    return {
        "job_timeout_s": queue.job_timeout_s,
        "max_attempts": queue.max_attempts,
        "cancel_grace_s": queue.cancel_grace_s,
        "start_timeout_s": queue.worker_start_timeout_s,
        "start_backoff_s": queue.worker_start_backoff_s,
    }


class WorkerSupervisor:
    def __init__(
        self,
        spec: RendererSpec,
        *,
        emit: Callable[[JobEvent], None],
        job_timeout_s: float = 600.0,
        max_attempts: int = 2,
        cancel_grace_s: float = 15.0,
        start_timeout_s: float = 900.0,
        start_backoff_s: float = 60.0,
        name: str = "local",
    ) -> None:
        self._spec = spec
        self._emit = emit
        self._timeout = job_timeout_s
        self._max_attempts = max_attempts
        self._grace = cancel_grace_s
        self._start_timeout = start_timeout_s
        self._start_backoff = start_backoff_s
        # The last failed start (when, what) and how many failed in a row: see _ensure_worker.
        self._start_failed: tuple[float, str] | None = None
        self._failed_starts = 0
        self.name = name
        self._ctx = multiprocessing.get_context("spawn")
        self._cancel = self._ctx.Event()
        self._worker: _Worker | None = None
        self._start_lock = asyncio.Lock()
        self._current: int | None = None
        self._cancel_requested_at: float | None = None
        self._aborting = False
        self.starts = 0  # worker processes started, for tests and logs

    # --- control -------------------------------------------------------------------------------

    @property
    def current_job(self) -> int | None:
        return self._current

    @property
    def worker_pid(self) -> int | None:
        return self._worker.process.pid if self._worker is not None else None

    def request_cancel(self, job_id: int) -> bool:
        """Ask the running job to stop; False if ``job_id`` is not the one running."""
        if self._current != job_id:
            return False
        if self._cancel_requested_at is None:
            self._cancel_requested_at = time.monotonic()
            self._cancel.set()
            self._poke()
        return True

    async def abort(self) -> None:
        """Stop the running job now without reporting it (shutdown: the caller requeues it)."""
        self._aborting = True
        self._poke()

    async def warm(self) -> str | None:
        """Start the worker (and load the models) before the first job needs it; returns why it
        could not start, or None."""
        try:
            await self._ensure_worker()
        except _StartError as exc:
            log.error("the GPU worker could not start: %s", exc)
            return str(exc)
        return None

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not worker.busy:  # a busy worker would only read "stop" after its render
            with contextlib.suppress(OSError):
                worker.conn.send(Stop())
            await asyncio.to_thread(worker.process.join, 5)
        if worker.process.is_alive():
            await self._kill(worker)
        worker.conn.close()

    # --- running jobs --------------------------------------------------------------------------

    async def run(self, job: JobSpec) -> None:
        """Run ``job`` to an end, emitting its events; retries crashes up to ``max_attempts``."""
        attempt = job.attempt
        while True:
            self._emit(JobStarted(job_id=job.job_id, attempt=attempt, worker=self.name))
            outcome = await self._attempt(job)
            match outcome.end:
                case _End.DONE:
                    r = outcome.rendered
                    assert r is not None
                    self._emit(
                        JobDone(
                            job_id=job.job_id,
                            png=r.png,
                            seconds=r.seconds,
                            stats=r.stats,
                            flagged=r.flagged,
                            check=r.check,
                            candidate_pngs=list(r.candidate_pngs),
                        )
                    )
                case _End.CANCELLED:
                    self._emit(JobCancelled(job_id=job.job_id))
                case _End.TIMEOUT:
                    said = f"Rendering took longer than {self._timeout:g} s and was stopped."
                    self._emit(JobFailed(job_id=job.job_id, user_message=said, detail="timeout"))
                case _End.ERROR:
                    self._emit(
                        JobFailed(job_id=job.job_id, user_message=outcome.user_message, detail=outcome.detail)
                    )
                case _End.START_FAILED:
                    self._emit(
                        JobFailed(job_id=job.job_id, user_message=START_MESSAGE, detail=outcome.detail)
                    )
                case _End.OUT_OF_MEMORY | _End.CRASH:
                    said = (
                        OutOfMemoryError.user_message if outcome.end is _End.OUT_OF_MEMORY else CRASH_MESSAGE
                    )
                    if attempt < self._max_attempts:
                        attempt += 1
                        log.warning(
                            "job %s: %s (%s); retrying, try %d", job.job_id, said, outcome.detail, attempt
                        )
                        self._emit(
                            JobRetrying(
                                job_id=job.job_id,
                                attempt=attempt,
                                user_message=f"{said} I'm retrying on a fresh worker.",
                            )
                        )
                        continue
                    self._emit(JobFailed(job_id=job.job_id, user_message=said, detail=outcome.detail))
                case _End.ABORTED:
                    pass  # shutdown: the queue's owner requeues the job, nothing to tell
            return

    async def _attempt(self, job: JobSpec) -> _Outcome:
        self._current = job.job_id
        self._cancel_requested_at = None
        self._cancel.clear()
        try:
            try:
                worker = await self._ensure_worker()
            except _StartError as exc:
                return _Outcome(_End.START_FAILED, detail=str(exc))
            if self._aborting:
                return _Outcome(_End.ABORTED)
            if self._cancel_requested_at is not None:
                return _Outcome(_End.CANCELLED)
            try:
                worker.conn.send(RunJob(job.job_id, job.request.model_dump_json()))
                worker.busy = True
            except OSError as exc:
                await self._discard()
                return _Outcome(_End.CRASH, detail=f"send failed: {exc}")
            return await self._follow(job, worker)
        finally:
            self._current = None
            self._cancel_requested_at = None

    async def _follow(self, job: JobSpec, worker: _Worker) -> _Outcome:
        deadline = time.monotonic() + self._timeout
        timed_out_at: float | None = None
        while True:
            if self._aborting:
                await self._discard()
                return _Outcome(_End.ABORTED)
            now = time.monotonic()
            if timed_out_at is not None:
                limit = timed_out_at + self._grace
            elif self._cancel_requested_at is not None:
                limit = min(deadline, self._cancel_requested_at + self._grace)
            else:
                limit = deadline
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that lands as a message arrives, and a cancelled host would render on.
                async with asyncio.timeout(max(0.0, limit - now)):
                    message = await worker.inbox.get()
            except TimeoutError:
                if timed_out_at is None and self._cancel_requested_at is None:
                    log.warning("job %s passed its %.0f s limit; stopping it", job.job_id, self._timeout)
                    timed_out_at = time.monotonic()
                    self._cancel.set()
                    continue
                log.warning("job %s did not stop in %.0f s; killing the worker", job.job_id, self._grace)
                await self._discard()
                return _Outcome(_End.TIMEOUT if timed_out_at is not None else _End.CANCELLED)
            stopping = timed_out_at is not None or self._cancel_requested_at is not None
            match message:
                case WorkerExited():
                    exitcode = await self._discard()
                    return _Outcome(_End.CRASH, detail=f"worker exit code {exitcode}")
                case Progress(job_id=job.job_id) if not stopping:
                    self._emit(
                        JobProgress(
                            job_id=job.job_id,
                            step=message.step,
                            total=message.total,
                            stage=message.stage,
                            preview_png=message.preview_png,
                        )
                    )
                case Rendered(job_id=job.job_id):
                    worker.busy = False
                    return _Outcome(_End.DONE, rendered=message)
                case RenderFailed(job_id=job.job_id, reason=FailureReason.CANCELLED):
                    worker.busy = False
                    return _Outcome(_End.TIMEOUT if timed_out_at is not None else _End.CANCELLED)
                case RenderFailed(job_id=job.job_id, reason=FailureReason.OUT_OF_MEMORY):
                    worker.busy = False
                    # A fresh process gives the retry all of the GPU's memory back.
                    await self._discard()
                    return _Outcome(_End.OUT_OF_MEMORY, detail=message.detail)
                case RenderFailed(job_id=job.job_id):
                    worker.busy = False
                    return _Outcome(_End.ERROR, user_message=message.user_message, detail=message.detail)
                case _:
                    pass  # a poke, progress after a stop request, or another job's late message

    # --- the process ---------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._worker is not None:
            self._worker.inbox.put_nowait(Poke())

    async def _ensure_worker(self) -> _Worker:
        """The live worker, or a new one. Within the back-off after a failed start (doubling
        with each failure in a row, at most 15 minutes) no new one is tried: the job fails at
        once with that start's error, where models that cannot load (offline with hub ids, a
        wrong folder) would take the whole load attempt again, minutes each time."""
        async with self._start_lock:
            if self._worker is not None and self._worker.process.is_alive():
                return self._worker
            if self._worker is not None:
                await self._discard()
            if self._start_failed is not None:
                at, detail = self._start_failed
                wait = min(self._start_backoff * 2 ** (self._failed_starts - 1), _MAX_BACKOFF_S)
                left = at + wait - time.monotonic()
                if left > 0:
                    raise _StartError(f"{detail} (the last start failed; next try in {left:.0f} s)")
            try:
                worker = await self._start()
            except _StartError as exc:
                self._start_failed = (time.monotonic(), str(exc))
                self._failed_starts += 1
                raise
            self._start_failed, self._failed_starts = None, 0
            return worker

    async def _start(self) -> _Worker:
        loop = asyncio.get_running_loop()
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            args=(child_conn, self._cancel, self._spec),
            name=f"lmd-gpu-worker-{self.name}",
            daemon=True,
        )
        await asyncio.to_thread(process.start)
        child_conn.close()  # so the reader sees EOF when the worker dies
        self.starts += 1
        inbox: asyncio.Queue[Inbox] = asyncio.Queue()
        threading.Thread(
            target=_read_forever, args=(parent_conn, loop, inbox), name="lmd-worker-reader", daemon=True
        ).start()
        worker = _Worker(process=process, conn=parent_conn, inbox=inbox)
        self._worker = worker
        log.info("GPU worker %s started (pid %s)", self.name, process.pid)
        try:
            while True:
                # asyncio.timeout, not wait_for (which can swallow a cancellation on Python 3.11):
                # each message the worker sends while starting gives it the full time again.
                async with asyncio.timeout(self._start_timeout):
                    message = await inbox.get()
                match message:
                    case Ready():
                        return worker
                    case Fatal(detail=detail):
                        raise _StartError(detail)
                    case WorkerExited():
                        raise _StartError(f"the worker exited while starting (code {process.exitcode})")
                    case _:
                        pass  # a poke: keep waiting
        except TimeoutError:
            await self._discard()
            raise _StartError(f"the worker did not start in {self._start_timeout:.0f} s") from None
        except _StartError:
            await self._discard()
            raise

    async def _discard(self) -> int | None:
        """Kill the worker (if alive) and forget it; returns its exit code."""
        worker, self._worker = self._worker, None
        if worker is None:
            return None
        await self._kill(worker)
        worker.conn.close()
        return worker.process.exitcode

    @staticmethod
    async def _kill(worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        await asyncio.to_thread(worker.process.join, 10)


class _StartError(Exception):
    pass
