"""Errors the scene services raise, each with a short reply for the user."""

from __future__ import annotations

from lmd_bot.errors import LmdError
from lmd_bot.rendering import MAX_CANDIDATES


class NotOwnerError(LmdError):
    user_message = "Only the person who started this scene can change it (they can /share it with everyone)."


class NotAdminError(LmdError):
    user_message = "Only server admins (Manage Server) can do that."


class NothingToUndoError(LmdError):
    user_message = "This is the first round; there's nothing to undo."


class SceneNotFoundError(LmdError):
    user_message = "I can't find that scene any more."


class TextTooLongError(LmdError):
    def __init__(self, length: int, limit: int, what: str = "message") -> None:
        super().__init__(
            f"{what} of {length} characters",
            user_message=f"That {what} is too long ({length} characters; the limit is {limit}).",
        )


class EmptyTextError(LmdError):
    def __init__(self, what: str = "message") -> None:
        super().__init__(f"empty {what}", user_message=f"Tell me what to draw: the {what} is empty.")


class RefineOffError(LmdError):
    user_message = (
        "SDXL refinement is off on this bot: its operator turns it on with diffusion.refine "
        '("on" or "button"), then admins choose it per server with /settings refine.'
    )


class NotRefinableError(LmdError):
    user_message = "That image can't be refined: only a finished render that wasn't refined yet can."


class GridNotRefinableError(NotRefinableError):
    user_message = "That's a grid of candidates: pick one first (its Pick button), then refine it."


class CandidateCountError(LmdError):
    """A candidate count out of 1..MAX_CANDIDATES (from a command, a setting or the terminal)."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"{count} candidates",
            user_message=f"Candidates: choose 1 to {MAX_CANDIDATES} images per render, not {count}.",
        )


class NotAGridError(LmdError):
    user_message = (
        "That result is a single image, not a grid of candidates: there is nothing to pick. "
        "Ask for a grid with `/imagine candidates:`."
    )


class AlreadyPickedError(LmdError):
    """The candidate asked for is the scene's current round already (a Pick pressed twice)."""

    def __init__(self, number: int, round_number: int) -> None:
        super().__init__(
            f"candidate {number} is round {round_number} already",
            user_message=f"Candidate {number} is picked already: it's round {round_number}. "
            "Tell me what to change next.",
        )


class UnchangedLayoutError(LmdError):
    """A revision or hand edit that leaves the round's layout exactly as it was: with the scene's
    seed its render would be the same picture again."""

    user_message = (
        "That leaves the layout exactly as it is, so I'd draw the same picture again. "
        "Tell me what to change, or reroll for a new seed."
    )
