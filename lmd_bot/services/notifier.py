"""How the services speak to the people in a scene when something happens on its own schedule
(a job moves in the queue, progresses, finishes or fails). Each adapter implements it."""

from __future__ import annotations

from typing import Protocol

from lmd_bot.services.views import FailureView, ResultView, StatusView


class DestinationGoneError(Exception):
    """The scene's thread is gone (deleted, archived and locked, or the bot lost access): its
    jobs are cancelled and their slots freed."""


class Notifier(Protocol):
    async def show_status(self, view: StatusView) -> int | None:
        """Post or edit the job's status message (``view.job.status_message_id``); return its id."""

    async def show_result(self, view: ResultView) -> int | None:
        """Show a finished render (in place of its status message); return the message's id."""

    async def show_failure(self, view: FailureView) -> int | None:
        """Show that the job failed, with a retry where ``view.retryable``; return the message's id."""
