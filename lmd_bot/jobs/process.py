"""The GPU worker process: builds the renderer once, then renders the jobs its parent sends.

It runs in a process of its own (``multiprocessing`` spawn), so a crash, a hang or an
out-of-memory error in CUDA cannot take the bot down; :mod:`lmd_bot.jobs.supervisor` restarts it.

The messages over its duplex pipe are the frozen types of :mod:`lmd_bot.jobs.protocol`.
Cancellation is a shared event the renderer polls between steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import signal
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from PIL import Image

from lmd_bot.errors import CancelledError, LmdError, OutOfMemoryError, RenderError, is_out_of_memory
from lmd_bot.jobs.protocol import (
    FailureReason,
    Fatal,
    Progress,
    Ready,
    Rendered,
    RenderFailed,
    RunJob,
    Stop,
)
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.logs import configure_logging
from lmd_bot.rendering import Renderer, RenderProgress, RenderRequest
from lmd_bot.safety import SafetyChecker

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
PREVIEW_SIDE = 160  # pixels: a status message's preview is a thumbnail
PROGRESS_INTERVAL_S = 0.5  # the bot edits at most every few seconds; more would only cost pickling


def _png(image: Image.Image, side: int | None = None) -> bytes:
    if side is not None:
        image = image.copy()
        image.thumbnail((side, side))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=side is not None)
    return buf.getvalue()


def _render_one(
    conn: Connection, cancel: Event, renderer: Renderer, checker: SafetyChecker | None, job: RunJob
) -> None:
    last_sent = 0.0

    def progress(p: RenderProgress) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent < PROGRESS_INTERVAL_S and p.step < p.total:
            return
        last_sent = now
        image = p.preview()  # drawn only for the progress that is sent
        preview = _png(image, PREVIEW_SIDE) if image is not None else None
        conn.send(Progress(job.job_id, p.step, p.total, p.stage, preview))

    try:
        request = RenderRequest.model_validate_json(job.request_json)
        output = renderer.render(request, progress, cancel.is_set)
        images = output.candidates or [output.image]
        flagged = any(checker.check(image) for image in images) if checker is not None else False
        png = _png(output.image)
        candidate_pngs = tuple(_png(image) for image in output.candidates)
    except CancelledError:
        conn.send(RenderFailed(job.job_id, FailureReason.CANCELLED, CancelledError.user_message))
    except Exception as exc:  # whatever the renderer raises, the bot must hear of it
        log.exception("job %s failed", job.job_id)
        if is_out_of_memory(exc):
            failed = RenderFailed(
                job.job_id, FailureReason.OUT_OF_MEMORY, OutOfMemoryError.user_message, str(exc)[:500]
            )
        else:
            message = exc.user_message if isinstance(exc, LmdError) else RenderError.user_message
            failed = RenderFailed(
                job.job_id, FailureReason.ERROR, message, f"{type(exc).__name__}: {exc}"[:500]
            )
        conn.send(failed)
    else:
        conn.send(
            Rendered(
                job.job_id, png, output.seconds, dict(output.stats), flagged, output.check, candidate_pngs
            )
        )


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this process when its parent dies, even by SIGKILL: an
    orphaned GPU worker would hold the GPU's memory and render for nobody."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_main(conn: Connection, cancel: Event, spec: RendererSpec) -> None:
    """The worker process's entry point (picklable, so ``spawn`` can start it)."""
    _die_with_parent()
    # Ctrl+C in a terminal reaches the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.log_level, process="gpu-worker[%(process)d]")
    try:
        renderer = spec.load_renderer()
        checker = spec.load_checker()
    except Exception as exc:  # reported to the parent, which decides
        if isinstance(exc, LmdError):  # a setting to fix, named in the message: no traceback to read
            log.error("the renderer could not start: %s", exc)
            log.debug("the renderer could not start", exc_info=True)
        else:
            log.exception("the renderer could not start")
        conn.send(Fatal(f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(Ready())
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        match message:
            case Stop():
                return
            case RunJob():
                _render_one(conn, cancel, renderer, checker, message)
