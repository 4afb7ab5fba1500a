"""Errors that carry a message fit to show a user.

Every error a user can cause or meet derives from :class:`LmdError`. Its ``user_message`` is short,
friendly and free of internals (it goes to Discord or the terminal as is); ``str(err)`` may hold
detail for the log. Adapters (cogs, CLI) show ``user_message`` and log the rest.
"""

from __future__ import annotations

import sys


class LmdError(Exception):
    """Base class: an error with a user-presentable message."""

    user_message: str = "Something went wrong."

    def __init__(self, detail: str | None = None, *, user_message: str | None = None) -> None:
        if user_message is not None:
            self.user_message = user_message
        super().__init__(detail or self.user_message)


class LayoutError(LmdError, ValueError):
    """A scene layout (from the LLM, a file or a user) cannot be used as it is."""

    user_message = "That layout isn't valid."

    def __init__(self, detail: str, *, problems: list[str] | None = None) -> None:
        self.problems = problems or [detail]
        super().__init__(detail, user_message=f"That layout isn't valid: {detail}")


class ConfigError(LmdError):
    """A setting is missing or invalid; the message names it and how to fix it."""

    user_message = "The bot is misconfigured."


class StorageError(LmdError):
    """The database could not be written (locked past its busy timeout, disk full, unreachable):
    nothing was saved, and trying again later may work."""

    user_message = "I couldn't save that just now; please try again in a moment."


class PlannerError(LmdError):
    """The LLM planner could not produce a layout."""

    user_message = "I couldn't lay this out — try naming the objects and where they go."


class PlannerBusyError(PlannerError):
    """The LLM service stayed overloaded or rate-limited past our deadline."""

    user_message = "The layout service is busy; try again in a minute."


class RenderError(LmdError):
    """Rendering failed."""

    user_message = "Rendering failed."


class OutOfMemoryError(RenderError):
    user_message = "Rendering failed (out of GPU memory)."


def is_out_of_memory(exc: BaseException) -> bool:
    """The one place that recognises running out of memory: ours, Python's, torch's (CUDA), and
    the plain RuntimeError some CUDA and MPS paths raise instead. Never imports torch itself."""
    if isinstance(exc, OutOfMemoryError | MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class CancelledError(RenderError):
    """A render was cancelled cooperatively between steps."""

    user_message = "Cancelled."
