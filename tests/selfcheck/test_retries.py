"""The self-check loop on tiny models: a missing object is re-generated alone (UNet passes counted
with a forward hook: none for the others), at most N times; a correct image triggers nothing.

Tiny random weights draw nothing a detector could recognise, so the detector here is a scripted
one that looks at the real rendered pixels: it sees every object, except that the one it is
"blind" to only shows up once the pixels inside its box changed (it was re-generated), or never.
The findings themselves are tested with the shapes detector on the world's renders
(test_findings.py).
"""

import numpy as np
import pytest

from lmd_bot.diffusion.cache import ObjectCache
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.renderer import DiffusionRenderer
from lmd_bot.diffusion.tiny import tiny_components
from lmd_bot.eval.predicates import NamedBox
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode, RenderRequest
from lmd_bot.selfcheck.loop import SelfChecker
from lmd_bot.selfcheck.report import Problem

STEPS = 2
SIZE = 128
LAYOUT = SceneLayout.model_validate(
    {
        "background": "a garden",
        "objects": [
            {"id": 1, "caption": "a gray cat", "box": [40, 220, 200, 250]},
            {"id": 2, "caption": "a blue cup", "box": [300, 330, 150, 150]},
        ],
    }
)


class ScriptedDetector:
    name = "scripted"

    def __init__(self, blind_to: int | None = None, *, appears_when_redrawn: bool = True) -> None:
        self.blind_to = blind_to
        self.appears_when_redrawn = appears_when_redrawn
        self.first: np.ndarray | None = None
        self.calls = 0

    def unanswerable(self, queries):
        return set()

    def detect(self, image, queries):
        self.calls += 1
        pixels = np.asarray(image)
        if self.first is None:
            self.first = pixels
        scale = image.width / LAYOUT.width
        boxes = []
        for obj in LAYOUT.objects:
            b = obj.box
            region = np.s_[int(b.y * scale) : int(b.y1 * scale), int(b.x * scale) : int(b.x1 * scale)]
            redrawn = not np.array_equal(pixels[region], self.first[region])
            if obj.id == self.blind_to and not (self.appears_when_redrawn and redrawn):
                continue
            box = (b.x * scale, b.y * scale, b.w * scale, b.h * scale)
            boxes.append(NamedBox(name=f"a photo of {obj.caption}", box=box, score=0.9))
        return boxes


@pytest.fixture(scope="module")
def pipeline():
    return LmdPipeline(tiny_components(seed=0, sam=False))


def _renderer(pipeline, detector=None, retries=2):
    # No shared object cache at all (0 bytes): the retry's reuse comes from the render's own pins.
    checker = SelfChecker(detector, max_retries=retries) if detector is not None else None
    return DiffusionRenderer(pipeline, size=SIZE, cache=ObjectCache(0), checker=checker)


class UnetCalls:
    """Every forward of a UNet: the batch size of its latents."""

    def __init__(self, unet):
        self.batches: list[int] = []
        self.handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(sample.shape[0])

    def close(self):
        self.handle.remove()


@pytest.fixture
def request_():
    return RenderRequest(layout=LAYOUT, mode=RenderMode.LMD_PLUS, seed=5, steps=STEPS)


def _render_counting(renderer, request):
    calls = UnetCalls(renderer.pipeline.c.gligen_unet)
    try:
        return renderer.render(request), calls.batches
    finally:
        calls.close()


def test_a_missing_object_is_regenerated_alone_and_fixed(pipeline, request_):
    detector = ScriptedDetector(blind_to=2)
    plain, plain_batches = _render_counting(_renderer(pipeline), request_)
    out, batches = _render_counting(_renderer(pipeline, detector), request_)

    report = out.check
    assert report.fixed == ("a blue cup",) and report.retries == 1 and report.remaining == ()
    assert report.line() == "self-check: 2/2 objects found; fixed 1 (the blue cup) in 1 retry"
    assert not np.array_equal(np.asarray(out.image), np.asarray(plain.image))  # the retried image is kept
    # The first render is the plain one; the retry ran the cup alone (a CFG batch of 2) and the
    # overall run: no UNet pass for the cat, whose run came from the render's pins.
    first, retry = batches[: len(plain_batches)], batches[len(plain_batches) :]
    assert first == plain_batches and max(first) == 4  # both objects in one batch at first
    assert sorted(retry, reverse=True)[: 2 * STEPS] == [2] * (2 * STEPS) and max(retry) == 2
    assert retry.count(2) == 2 * STEPS  # STEPS per-object calls for the cup, STEPS overall
    assert out.stats["check_object_runs"] == 1 and out.stats["check_object_cache_hits"] == 1
    assert out.stats["check_unet_forwards"] == 2 * STEPS and out.stats["check_retries"] == 1
    assert out.stats["unet_forwards"] == 2 * STEPS  # the first render's own figure is unchanged


def test_retries_stop_after_n_and_what_is_still_missing_is_reported(pipeline, request_):
    detector = ScriptedDetector(blind_to=2, appears_when_redrawn=False)
    out = _renderer(pipeline, detector, retries=2).render(request_)
    assert detector.calls == 3  # the render and two retries
    report = out.check
    assert report.retries == 2 and report.fixed == () and report.found == 1
    assert [(f.problem, f.object_id) for f in report.remaining] == [(Problem.MISSING, 2)]
    assert report.missing_ids == (2,)
    assert report.line() == (
        "self-check: 1/2 objects found; still missing: the blue cup; 2 retries did not fix it"
    )
    assert out.stats["check_object_runs"] == 2 and out.stats["check_object_cache_hits"] == 2


def test_a_correct_image_triggers_nothing(pipeline, request_):
    detector = ScriptedDetector()
    plain = _renderer(pipeline).render(request_)
    out, batches = _render_counting(_renderer(pipeline, detector), request_)
    assert detector.calls == 1 and out.check.retries == 0
    assert out.check.line() == "self-check: 2/2 objects found"
    assert len(batches) == plain.stats["unet_forwards"] + plain.stats["guided_passes"]
    assert out.stats["check_unet_forwards"] == 0
    assert np.array_equal(np.asarray(out.image), np.asarray(plain.image))


def test_fast_mode_is_checked_but_not_retried(pipeline, request_):
    detector = ScriptedDetector(blind_to=1)
    out = _renderer(pipeline, detector).render(request_.model_copy(update={"mode": RenderMode.FAST}))
    assert detector.calls == 1 and out.check.retries == 0 and out.check.missing_ids == (1,)
    assert out.check.line().endswith("retries are off")


class BrokenDetector(ScriptedDetector):
    def detect(self, image, queries):
        raise RuntimeError("the detector broke")


def test_a_failing_detector_keeps_the_image_and_says_the_check_did_not_run(pipeline, request_):
    fast = request_.model_copy(update={"mode": RenderMode.FAST})
    plain = _renderer(pipeline).render(fast)
    out = _renderer(pipeline, BrokenDetector()).render(fast)
    assert np.array_equal(np.asarray(out.image), np.asarray(plain.image))
    assert out.check.error == "RuntimeError: the detector broke"
    assert out.check.line() == (
        "self-check could not run (RuntimeError: the detector broke); the image is unchecked"
    )
