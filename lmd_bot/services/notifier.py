"""The notifier port: how the services speak to people, in two halves each adapter implements.

- A :class:`Presenter` answers the person who asked, during their request: the plan (before its
  render is queued), a reply in words, the round an undo went back to. The use case drives it.
- The :class:`Notifier`, attached once, follows jobs on the queue's schedule: status, result,
  failure. It works from ids alone (the scene's thread, the job's status message), so it keeps
  working for jobs that outlived a restart.
"""

from __future__ import annotations

from typing import Protocol

from lmd_bot.services.views import (
    FailureView,
    PlanShown,
    PlanView,
    ReplyView,
    ResultView,
    StatusView,
    UndoView,
)


class DestinationGoneError(Exception):
    """The scene's thread is gone (deleted, archived and locked, or the bot lost access): its
    jobs are cancelled and their slots freed."""


class Presenter(Protocol):
    async def show_plan(self, view: PlanView) -> PlanShown:
        """Show a new round's plan in words; say where (a new scene's thread is opened from it)."""

    async def show_plan_picture(self, view: PlanView, shown: PlanShown) -> None:
        """Add the plan's picture (``view.overlay_png``, drawn after its render was queued) to
        the plan shown at ``shown``."""

    async def show_reply(self, view: ReplyView) -> None:
        """Answer in words: the planner's reply, or why a shown plan could not be queued."""

    async def show_undo(self, view: UndoView) -> int | None:
        """Show the round an undo went back to (its result, or its plan); return the message id."""


class Notifier(Protocol):
    async def show_status(self, view: StatusView) -> int | None:
        """Post or edit the job's status message (``view.job.status_message_id``); return its id."""

    async def show_result(self, view: ResultView) -> int | None:
        """Show a finished render (in place of its status message); return the message's id."""

    async def show_failure(self, view: FailureView) -> int | None:
        """Show that the job failed, with a retry where ``view.retryable``; return the message's id."""
