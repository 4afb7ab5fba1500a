"""The GPU worker process: builds the renderer once, then renders the jobs its parent sends.

It runs in a process of its own (``multiprocessing`` spawn), so a crash, a hang or an
out-of-memory error in CUDA cannot take the bot down; :mod:`lmd_bot.jobs.supervisor` restarts it.

Messages (tuples over a duplex pipe):

- parent to worker: ``("job", job_id, request_json)``, ``("stop",)``;
- worker to parent: ``("ready",)`` or ``("fatal", detail)`` once at start, then per job
  ``("progress", job_id, step, total, stage, preview_png | None)``, and
  ``("done", job_id, png, seconds, stats, flagged)`` or ``("failed", job_id, reason, message,
  detail)`` with reason ``"cancelled"``, ``"oom"`` or ``"error"``.

Cancellation is a shared event the renderer polls between steps.
"""

from __future__ import annotations

import io
import logging
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from lmd_bot.errors import CancelledError, LmdError, OutOfMemoryError, RenderError
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.rendering import RenderProgress, RenderRequest

log = logging.getLogger(__name__)

PREVIEW_SIDE = 160  # pixels: a status message's preview is a thumbnail
PROGRESS_INTERVAL_S = 0.5  # the bot edits at most every few seconds; more would only cost pickling


def _png(image: Any, side: int | None = None) -> bytes:
    if side is not None:
        image = image.copy()
        image.thumbnail((side, side))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=side is not None)
    return buf.getvalue()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, OutOfMemoryError | MemoryError) or "out of memory" in str(exc).lower()


def _render_one(
    conn: Connection, cancel: Event, renderer: Any, checker: Any, job_id: int, payload: str
) -> None:
    last_sent = 0.0

    def progress(p: RenderProgress) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent < PROGRESS_INTERVAL_S and p.step < p.total:
            return
        last_sent = now
        preview = _png(p.preview, PREVIEW_SIDE) if p.preview is not None else None
        conn.send(("progress", job_id, p.step, p.total, p.stage, preview))

    try:
        request = RenderRequest.model_validate_json(payload)
        output = renderer.render(request, progress, cancel.is_set)
        flagged = bool(checker.check(output.image)) if checker is not None else False
        png = _png(output.image)
    except CancelledError:
        conn.send(("failed", job_id, "cancelled", "Cancelled.", ""))
    except Exception as exc:  # whatever the renderer raises, the bot must hear of it
        log.exception("job %s failed", job_id)
        if _is_oom(exc):
            conn.send(("failed", job_id, "oom", OutOfMemoryError.user_message, str(exc)[:500]))
        else:
            message = exc.user_message if isinstance(exc, LmdError) else RenderError.user_message
            conn.send(("failed", job_id, "error", message, f"{type(exc).__name__}: {exc}"[:500]))
    else:
        conn.send(("done", job_id, png, output.seconds, dict(output.stats), flagged))


def worker_main(conn: Connection, cancel: Event, spec: RendererSpec) -> None:
    """The worker process's entry point (picklable, so ``spawn`` can start it)."""
    # Ctrl+C in a terminal reaches the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level, format="%(asctime)s %(levelname)s gpu-worker[%(process)d] %(name)s: %(message)s"
    )
    try:
        renderer = spec.load_renderer()
        checker = spec.load_checker()
    except Exception as exc:  # reported to the parent, which decides
        log.exception("the renderer could not start")
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"[:500]))
        return
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message[0] == "stop":
            return
        _, job_id, payload = message
        _render_one(conn, cancel, renderer, checker, job_id, payload)
