"""Which detector checks and which one scores: they must be told apart in every benchmark report.

A self-check keeps the image its detector likes best; scored by the same detector, the gain is
partly the detector agreeing with itself. Reports name both roles, and a run checked by its own
scorer is flagged in its name and in a note under the title (lmd-bot does not refuse it: the
shapes world has one detector, and its figures are still worth seeing, labelled).
"""

from __future__ import annotations

FLATTERED = "checked by its own scoring detector: flattered"


def same_detector(scorer: str, checker: str) -> bool:
    """Whether two detector names ("OWLv2", "owlv2", "shapes detector") are the same detector."""

    def norm(name: str) -> str:
        return name.lower().replace("-", "").replace(" detector", "").strip()

    return norm(scorer) == norm(checker)


def roles(scorer: str, checker: str | None) -> tuple[dict[str, str], list[str]]:
    """The report's settings naming both roles, and its warning notes."""
    settings = {
        "scoring detector": scorer,
        "checking detector (self-check)": checker or "none (no self-check)",
    }
    notes = []
    if checker is not None and same_detector(scorer, checker):
        notes.append(
            f"Warning: the self-check used the scoring detector ({scorer}). The accuracy with the "
            "check is flattered: the kept images are those this very detector likes. Check with "
            "another detector for a fair figure."
        )
    return settings, notes
