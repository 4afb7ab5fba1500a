"""The self-check loop, inside the GPU worker: detect, re-generate the wrong objects, keep the best.

1. The rendered image is checked against the layout (:mod:`.findings`).
2. While objects are missing or outside their box and retries are left, those objects alone get a
   new seed (:func:`reseed`) and the scene is rendered again. Every other object keeps its seed,
   so its per-object run is a cache hit (:class:`RoundCache` keeps this render's runs even when
   the shared cache is off or evicts them): a retry costs one per-object run per re-seeded
   object and the overall run, no UNet pass for the objects that were right.
3. The best image by :attr:`Assessment.score` is kept (the first one on ties); what is still wrong
   in it is reported, never dropped.

docs/selfcheck.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmd_bot.errors import is_out_of_memory
from lmd_bot.selfcheck.findings import Assessment, assess, queries
from lmd_bot.selfcheck.report import CheckReport

if TYPE_CHECKING:
    from PIL import Image

    from lmd_bot.diffusion.cache import ObjectCache
    from lmd_bot.diffusion.objects import ObjectResult
    from lmd_bot.diffusion.spec import GenerationSpec
    from lmd_bot.layout.schema import SceneLayout
    from lmd_bot.selfcheck.detectors import CheckDetector

log = logging.getLogger(__name__)

Rerender = Callable[["GenerationSpec"], "Image.Image"]


class DetectorFailedError(Exception):
    """The checking detector raised: the check stops, the render does not fail."""


class RoundCache:
    """The renderer's object cache with this render's runs pinned (on the CPU) until it ends, so
    that a retry reuses the objects it does not re-seed whatever the shared cache's size."""

    def __init__(self, shared: ObjectCache | None) -> None:
        self.shared = shared
        self._pinned: dict[str, ObjectResult] = {}

    def get(self, key: str) -> ObjectResult | None:
        result = self._pinned.get(key)
        if result is None and self.shared is not None:
            result = self.shared.get(key)
            if result is not None:
                self._pinned[key] = result
        return result

    def put(self, key: str, result: ObjectResult) -> None:
        self._pinned[key] = result.to("cpu")
        if self.shared is not None:
            self.shared.put(key, result)


def retry_seed(seed: int, object_id: int, attempt: int) -> int:
    """A fresh seed for an object's retry, stable in the seed it replaces, the object and the try."""
    digest = hashlib.blake2b(f"lmd-selfcheck:{seed}:{object_id}:{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def reseed(spec: GenerationSpec, object_ids: tuple[int, ...], attempt: int) -> GenerationSpec:
    """``spec`` with new seeds for ``object_ids`` only (scene seed and every other object unchanged)."""
    ids = set(object_ids)
    objects = tuple(
        o.model_copy(update={"seed": retry_seed(o.seed, o.id, attempt)}) if o.id in ids else o
        for o in spec.objects
    )
    return spec.model_copy(update={"objects": objects})


@dataclass(frozen=True)
class CheckOutcome:
    image: Image.Image  # the kept image
    report: CheckReport


class SelfChecker:
    def __init__(self, detector: CheckDetector, *, max_retries: int = 2) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.detector = detector
        self.max_retries = max_retries

    def assess(self, layout: SceneLayout, image: Image.Image) -> Assessment:
        """``image`` checked against ``layout``; :class:`DetectorFailedError` if the detector raises."""
        asked = queries(layout)
        try:
            skip = self.detector.unanswerable(asked)
            boxes = self.detector.detect(image, [q for q in asked if q not in skip])
        except Exception as exc:  # a detector's bug must not cost the user the image
            if is_out_of_memory(exc):
                raise
            raise DetectorFailedError(f"{type(exc).__name__}: {exc}"[:200]) from exc
        return assess(layout, boxes, image.size, unanswerable=skip)

    def run(
        self,
        layout: SceneLayout,
        spec: GenerationSpec,
        image: Image.Image,
        rerender: Rerender | None,
    ) -> CheckOutcome:
        """Check ``image`` (rendered from ``spec``) and, with ``rerender``, fix what it can."""
        started = time.perf_counter()
        first = self.assess(layout, image)
        best, best_image, best_spec = first, image, spec
        retries = 0
        limit = self.max_retries if rerender is not None else 0
        while retries < limit and best.fixable_ids:
            retries += 1
            candidate_spec = reseed(best_spec, best.fixable_ids, retries)
            candidate_image = rerender(candidate_spec)
            candidate = self.assess(layout, candidate_image)
            log.info(
                "self-check retry %d of %s: found %s (best so far %s)",
                retries,
                best.fixable_ids,
                candidate.score,
                best.score,
            )
            if candidate.score > best.score:
                best, best_image, best_spec = candidate, candidate_image, candidate_spec
        captions = {o.id: o.caption for o in layout.objects}
        fixed = tuple(captions[i] for i in first.fixable_ids if i in best.found_ids)
        report = CheckReport(
            detector=self.detector.name,
            objects=len(layout.objects),
            found=len(best.found_ids),
            unchecked=len(best.unchecked_ids),
            fixed=fixed,
            remaining=best.findings,
            retries=retries,
            max_retries=limit,
            seconds=time.perf_counter() - started,
        )
        return CheckOutcome(best_image, report)
