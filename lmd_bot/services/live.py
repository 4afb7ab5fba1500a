"""What the render tracker knows of each job it follows, and a waiting job's place in the line.

A waiting job's status says "position P of N". The queue changes with every submit, start and
end, and each change can move every waiting job; building each one's status view on every change
(most of them replaced before the throttle sends them) made the status fan-out quadratic in the
line's length on the event loop. So a change only notes each job's new place and pushes
:data:`PLACE`; :func:`place_status` builds the view when the throttle sends it, at most once per
``discord.status_edit_interval_s``, and only if the place it says differs from the one shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmd_bot.scenes.models import JobRecord, RoundRecord, SceneRecord
from lmd_bot.services.views import StatusView


@dataclass
class Live:
    """A queued or running job the tracker is following."""

    job: JobRecord
    scene: SceneRecord
    round: RoundRecord
    queued_at: float  # monotonic
    # Its place in the line and the line's length (None once it runs), and those its status
    # message shows.
    position: int | None = None
    waiting: int | None = None
    serving: bool = True  # whether a worker served the queue at the last look at the line
    shown: tuple[int, int, bool] | None = None
    # Why the job is on another try: kept on its running statuses, which follow within moments
    # and would otherwise replace the "retrying" status before anyone saw it.
    retry_note: str | None = None


class Place:
    """Pushed to the throttle for a waiting job whose place changed: "show its place then"."""


PLACE = Place()

NO_WORKER = "no GPU worker is online right now; it starts as soon as one is"


def place_status(live: Live, running: int, avg_render_s: float | None) -> StatusView | None:
    """The waiting job's status from its place now; None once it left the line, or while its
    message says that place already (a new ETA alone is no edit: Discord counts the shown one
    down by itself)."""
    place = (live.position, live.waiting, live.serving)
    if live.position is None or live.waiting is None or live.shown == place:
        return None
    live.shown = place
    if not live.serving:  # nothing renders until a worker starts: no ETA to give
        return StatusView(
            scene=live.scene,
            job=live.job,
            round_number=live.round.number,
            state="queued",
            position=live.position,
            waiting=live.waiting,
            note=NO_WORKER,
        )
    # While jobs wait, every worker is busy: the running ones end about together, then the line
    # moves on as many at a time (one per worker, with several workers on the Redis queue).
    lanes = max(running, 1)
    rounds = (live.position - 1) // lanes + (1 if running else 0)
    return StatusView(
        scene=live.scene,
        job=live.job,
        round_number=live.round.number,
        state="queued",
        position=live.position,
        waiting=live.waiting,
        eta_s=avg_render_s * rounds if avg_render_s is not None else None,
    )
