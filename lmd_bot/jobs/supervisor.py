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
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

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
from lmd_bot.jobs.renderers import RendererSpec

log = logging.getLogger(__name__)

CRASH_MESSAGE = "Rendering failed: the GPU worker stopped unexpectedly."
START_MESSAGE = "The renderer could not start; the bot's admin can find why in its log."


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    inbox: asyncio.Queue[tuple[Any, ...]]
    busy: bool = False  # a job was sent and its end not yet received


@dataclass(frozen=True)
class _Outcome:
    kind: str  # done, cancelled, timeout, error, oom, crash, start_failed, aborted
    message: tuple[Any, ...] = ()
    detail: str = ""


def _read_forever(conn: Connection, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
    """Reader thread: hand each message to the loop; ``("exit",)`` when the worker is gone."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = ("exit",)
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, message)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return
        if message == ("exit",):
            return


class WorkerSupervisor:
    def __init__(
        self,
        spec: RendererSpec,
        *,
        emit: Callable[[JobEvent], None],
        job_timeout_s: float,
        max_attempts: int = 2,
        cancel_grace_s: float = 15.0,
        start_timeout_s: float = 900.0,
        name: str = "local",
    ) -> None:
        self._spec = spec
        self._emit = emit
        self._timeout = job_timeout_s
        self._max_attempts = max_attempts
        self._grace = cancel_grace_s
        self._start_timeout = start_timeout_s
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

    async def warm(self) -> None:
        """Start the worker (and load the models) before the first job needs it."""
        try:
            await self._ensure_worker()
        except _StartError as exc:
            log.error("the GPU worker could not start: %s", exc)

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not worker.busy:  # a busy worker would only read "stop" after its render
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
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
            if outcome.kind == "done":
                _, _, png, seconds, stats, flagged = outcome.message
                self._emit(JobDone(job_id=job.job_id, png=png, seconds=seconds, stats=stats, flagged=flagged))
            elif outcome.kind == "cancelled":
                self._emit(JobCancelled(job_id=job.job_id))
            elif outcome.kind == "timeout":
                self._emit(
                    JobFailed(
                        job_id=job.job_id,
                        user_message=f"Rendering took longer than {self._timeout:g} s and was stopped.",
                        detail="timeout",
                    )
                )
            elif outcome.kind == "error":
                self._emit(
                    JobFailed(job_id=job.job_id, user_message=outcome.message[3], detail=outcome.detail)
                )
            elif outcome.kind == "start_failed":
                self._emit(JobFailed(job_id=job.job_id, user_message=START_MESSAGE, detail=outcome.detail))
            elif outcome.kind in ("oom", "crash"):
                said = OutOfMemoryError.user_message if outcome.kind == "oom" else CRASH_MESSAGE
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
            # "aborted": shutdown; the queue's owner requeues the job, nothing to tell.
            return

    async def _attempt(self, job: JobSpec) -> _Outcome:
        self._current = job.job_id
        self._cancel_requested_at = None
        self._cancel.clear()
        try:
            try:
                worker = await self._ensure_worker()
            except _StartError as exc:
                return _Outcome("start_failed", detail=str(exc))
            if self._aborting:
                return _Outcome("aborted")
            if self._cancel_requested_at is not None:
                return _Outcome("cancelled")
            try:
                worker.conn.send(("job", job.job_id, job.request.model_dump_json()))
                worker.busy = True
            except OSError as exc:
                await self._discard()
                return _Outcome("crash", detail=f"send failed: {exc}")
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
                return _Outcome("aborted")
            now = time.monotonic()
            if timed_out_at is not None:
                limit = timed_out_at + self._grace
            elif self._cancel_requested_at is not None:
                limit = min(deadline, self._cancel_requested_at + self._grace)
            else:
                limit = deadline
            try:
                message = await asyncio.wait_for(worker.inbox.get(), max(0.0, limit - now))
            except TimeoutError:
                if timed_out_at is None and self._cancel_requested_at is None:
                    log.warning("job %s passed its %.0f s limit; stopping it", job.job_id, self._timeout)
                    timed_out_at = time.monotonic()
                    self._cancel.set()
                    continue
                log.warning("job %s did not stop in %.0f s; killing the worker", job.job_id, self._grace)
                await self._discard()
                return _Outcome("timeout" if timed_out_at is not None else "cancelled")
            kind = message[0]
            if kind == "exit":
                exitcode = await self._discard()
                return _Outcome("crash", detail=f"worker exit code {exitcode}")
            if kind == "poke" or message[1] != job.job_id:
                continue
            if kind == "progress":
                if timed_out_at is None and self._cancel_requested_at is None:
                    _, _, step, total, stage, preview = message
                    self._emit(
                        JobProgress(
                            job_id=job.job_id, step=step, total=total, stage=stage, preview_png=preview
                        )
                    )
            elif kind == "done":
                worker.busy = False
                return _Outcome("done", message)
            elif kind == "failed":
                worker.busy = False
                reason = message[2]
                if reason == "cancelled":
                    return _Outcome("timeout" if timed_out_at is not None else "cancelled")
                if reason == "oom":
                    # A fresh process gives the retry all of the GPU's memory back.
                    await self._discard()
                    return _Outcome("oom", message, detail=message[4])
                return _Outcome("error", message, detail=message[4])

    # --- the process ---------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._worker is not None:
            self._worker.inbox.put_nowait(("poke",))

    async def _ensure_worker(self) -> _Worker:
        async with self._start_lock:
            if self._worker is not None and self._worker.process.is_alive():
                return self._worker
            if self._worker is not None:
                await self._discard()
            return await self._start()

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
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        threading.Thread(
            target=_read_forever, args=(parent_conn, loop, inbox), name="lmd-worker-reader", daemon=True
        ).start()
        worker = _Worker(process=process, conn=parent_conn, inbox=inbox)
        self._worker = worker
        log.info("GPU worker %s started (pid %s)", self.name, process.pid)
        try:
            while True:
                message = await asyncio.wait_for(inbox.get(), self._start_timeout)
                if message[0] == "ready":
                    return worker
                if message[0] == "fatal":
                    raise _StartError(message[1])
                if message[0] == "exit":
                    raise _StartError(f"the worker exited while starting (code {process.exitcode})")
                # a poke: keep waiting
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
