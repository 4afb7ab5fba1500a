"""The checking detector: what the self-check looks with (``diffusion.check_detector``).

OWLv2 is the default on real weights (the strongest open-vocabulary detector the benchmark
knows); the shapes world's own detector on the shapes models, which no photo detector
understands. The benchmark scores with a detector chosen separately: checking and scoring with
the same one flatters the result, and reports say so (:mod:`lmd_bot.selfcheck.roles`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from lmd_bot.eval.predicates import NamedBox

if TYPE_CHECKING:
    from PIL import Image


class CheckDetectorKind(StrEnum):
    NONE = "none"
    OWLV2 = "owlv2"
    OWLVIT = "owlvit"
    SHAPES = "shapes"


class CheckDetector(Protocol):
    name: str

    def detect(self, image: Image.Image, queries: list[str]) -> list[NamedBox]: ...

    def unanswerable(self, queries: list[str]) -> set[str]:
        """The queries this detector cannot be asked (their objects go unchecked)."""
        ...


class OwlChecker:
    """OWL-ViT or OWLv2 (:class:`lmd_bot.eval.detector.Detector`): any words are a query."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.name = detector.name

    def detect(self, image: Image.Image, queries: list[str]) -> list[NamedBox]:
        return self.detector.detect(image, queries) if queries else []

    def unanswerable(self, queries: list[str]) -> set[str]:
        return set()


class ShapesChecker:
    """The shapes world's detector; it answers "a photo of (a) (colour) shape" only."""

    name = "shapes"

    def __init__(self) -> None:
        from lmd_bot.shapes.detector import ShapesDetector

        self.detector = ShapesDetector()

    def unanswerable(self, queries: list[str]) -> set[str]:
        from PIL import Image

        probe = Image.new("RGB", (8, 8))
        out = set()
        for query in queries:
            try:
                self.detector.detect(probe, [query])
            except ValueError:
                out.add(query)
        return out

    def detect(self, image: Image.Image, queries: list[str]) -> list[NamedBox]:
        skip = self.unanswerable(queries)
        return self.detector.detect(image, [q for q in queries if q not in skip])


def build_check_detector(
    kind: CheckDetectorKind, model_id: str = "", *, device: str = "auto"
) -> CheckDetector:
    """The checking detector of ``kind`` (``model_id``: an OWL hub id or folder; default the
    benchmark's). Raises :class:`lmd_bot.errors.ConfigError` when an OWL model cannot load."""
    if kind is CheckDetectorKind.SHAPES:
        return ShapesChecker()
    if kind is CheckDetectorKind.NONE:
        raise ValueError("no checking detector is configured")
    from lmd_bot.eval.detector import load_detector

    return OwlChecker(load_detector(kind.value, model_id or None, device=device))
