"""What crosses the pipe between the supervisor and its GPU worker process.

Frozen dataclasses (pickled by ``multiprocessing``), dispatched with ``match`` on both sides.
The parent sends :class:`RunJob` or :class:`Stop`; the worker answers :class:`Ready` or
:class:`Fatal` once at start, then per job any number of :class:`Progress` and one
:class:`Rendered` or :class:`RenderFailed`. The supervisor's reader thread adds
:class:`WorkerExited` when the pipe closes, and the supervisor pokes its own inbox with
:class:`Poke` to re-check a cancel or an abort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lmd_bot.selfcheck.report import CheckReport


class FailureReason(StrEnum):
    """Why the worker could not render a job (the worker itself is still alive)."""

    CANCELLED = "cancelled"  # asked to stop (a cancel, or the job's time limit)
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out of memory: a fresh process may fit
    ERROR = "error"  # anything else the renderer raised


# --- parent to worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunJob:
    job_id: int
    request_json: str  # a RenderRequest as JSON: the worker validates it itself


@dataclass(frozen=True)
class Stop:
    pass


# --- worker to parent --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Fatal:
    """The renderer could not be built; the worker exits."""

    detail: str


@dataclass(frozen=True)
class Progress:
    job_id: int
    step: int
    total: int
    stage: str
    preview_png: bytes | None = None


@dataclass(frozen=True)
class Rendered:
    job_id: int
    png: bytes
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    flagged: bool = False  # the output safety checker flagged the image (any candidate)
    check: CheckReport | None = None  # the self-check's findings, when one ran
    candidate_pngs: tuple[bytes, ...] = ()  # every candidate's image, for a grid (png: the first)


@dataclass(frozen=True)
class RenderFailed:
    job_id: int
    reason: FailureReason
    user_message: str
    detail: str = ""


# --- inside the supervisor ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerExited:
    """The pipe closed: the worker process is gone."""


@dataclass(frozen=True)
class Poke:
    """Wake the supervisor to re-check a cancel request or an abort."""


ToWorker = RunJob | Stop
FromWorker = Ready | Fatal | Progress | Rendered | RenderFailed
Inbox = FromWorker | WorkerExited | Poke
