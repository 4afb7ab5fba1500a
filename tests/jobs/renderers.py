"""Renderers for queue tests. They run inside the real GPU worker process (spawned), so each is a
module-level factory named as ``"tests.jobs.renderers:NAME"`` in a RendererSpec.

Files in a folder the test owns steer them: a ``go`` file releases a gated render, a marker file
remembers that a crash already happened (so the retry, in a fresh process, succeeds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PIL import Image

from lmd_bot.errors import CancelledError, ConfigError, OutOfMemoryError
from lmd_bot.jobs.renderers import RendererSpec
from lmd_bot.rendering import RenderOutput, RenderProgress


def spec(name: str, **kwargs) -> RendererSpec:
    return RendererSpec(factory=f"tests.jobs.renderers:{name}", kwargs=kwargs)


class _Base:
    def __init__(self, folder: str | None = None) -> None:
        self.folder = Path(folder) if folder else None

    def _steps(self, request, progress, should_cancel, *, gate: bool = False, ignore_cancel: bool = False):
        for step in range(1, request.steps + 1):
            if should_cancel and should_cancel() and not ignore_cancel:
                raise CancelledError(f"stopped at step {step}")
            if progress:
                progress(
                    RenderProgress(
                        step=step, total=request.steps, draw_preview=lambda: Image.new("RGB", (32, 32))
                    )
                )
            if step == 1 and gate:
                self._wait_for_gate(request.seed, should_cancel, ignore_cancel)

    def _wait_for_gate(self, seed, should_cancel, ignore_cancel):
        (self.folder / f"started-{seed}").touch()
        while not (self.folder / "go").exists() and not (self.folder / f"go-{seed}").exists():
            if should_cancel and should_cancel() and not ignore_cancel:
                raise CancelledError("stopped while waiting")
            time.sleep(0.01)

    @staticmethod
    def _image(request) -> RenderOutput:
        shade = request.seed % 256
        return RenderOutput(image=Image.new("RGB", (64, 64), (shade, 100, 200)), seconds=0.01)


class Gated(_Base):
    """Reports step 1, then waits for ``go`` (or ``go-<seed>``) in the folder."""

    def render(self, request, progress=None, should_cancel=None):
        self._steps(request, progress, should_cancel, gate=True)
        return self._image(request)


class CrashOnce(_Base):
    """The first render (for a seed) kills its own process mid-job; the retry succeeds."""

    def render(self, request, progress=None, should_cancel=None):
        marker = self.folder / f"crashed-{request.seed}"
        if not marker.exists():
            marker.touch()
            if progress:
                progress(RenderProgress(step=1, total=request.steps))
            os._exit(3)
        self._steps(request, progress, should_cancel)
        return self._image(request)


class AlwaysCrash(_Base):
    def render(self, request, progress=None, should_cancel=None):
        os._exit(3)


class OomOnce(_Base):
    def render(self, request, progress=None, should_cancel=None):
        marker = self.folder / f"oom-{request.seed}"
        if not marker.exists():
            marker.touch()
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self._steps(request, progress, should_cancel)
        return self._image(request)


class Hang(_Base):
    """Never finishes and ignores cancellation: only killing its process stops it."""

    def render(self, request, progress=None, should_cancel=None):
        if progress:
            progress(RenderProgress(step=1, total=request.steps))
        (self.folder / f"started-{request.seed}").touch()
        while True:
            time.sleep(0.05)


class Noisy(_Base):
    """An image of random pixels, ``size`` square: its PNG is too big for a Discord upload
    (upload-limit tests)."""

    def __init__(self, size: int = 1500) -> None:
        super().__init__()
        self.size = size

    def render(self, request, progress=None, should_cancel=None):
        self._steps(request, progress, should_cancel)
        image = Image.frombytes("RGB", (self.size, self.size), os.urandom(self.size * self.size * 3))
        return RenderOutput(image=image, seconds=0.01)


class UnstableGuidance(_Base):
    """A render whose guidance hit NaN/inf twice (as the controller counts it in its figures)."""

    def render(self, request, progress=None, should_cancel=None):
        self._steps(request, progress, should_cancel)
        out = self._image(request)
        out.stats["guidance_nonfinite"] = 2.0
        return out


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("no CUDA device (simulated)")


def gated(folder: str) -> Gated:
    return Gated(folder)


def crash_once(folder: str) -> CrashOnce:
    return CrashOnce(folder)


def always_crash(folder: str) -> AlwaysCrash:
    return AlwaysCrash(folder)


def oom_once(folder: str) -> OomOnce:
    return OomOnce(folder)


def hang(folder: str) -> Hang:
    return Hang(folder)


def noisy(size: int = 1500) -> Noisy:
    return Noisy(size)


def unstable_guidance() -> UnstableGuidance:
    return UnstableGuidance()


def broken() -> Broken:
    return Broken()


def misconfigured() -> Broken:
    """What the real loading code raises for a model folder that is not there."""
    raise ConfigError(
        "cannot load the Stable Diffusion model '/models/sd' (diffusion.sd_model): no such folder"
    )


def flagging_checker():
    """A safety checker that flags every image (policy plumbing tests)."""

    class _Flag:
        def check(self, image) -> bool:
            return True

    return _Flag()
