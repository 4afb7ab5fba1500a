"""Rendered images on disk, the layout drawn over them, and fitting them under an upload limit.

Every Pillow call and every file write runs in a thread: encoding a 512² PNG takes tens of
milliseconds, too long to hold the event loop. Files are written whole or not at all (a full disk
leaves no empty or half-written image behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from lmd_bot.errors import ConfigError
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.overlay import draw_overlay


def _overlay_on(layout: SceneLayout, png: bytes, missing: tuple[int, ...]) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return draw_overlay(layout, image.convert("RGB"), missing=missing)


def fit_for_upload(png: bytes, limit_bytes: int) -> tuple[bytes, str]:
    """The image as PNG if it fits ``limit_bytes``, else as WebP at falling quality; (data, extension)."""
    if len(png) <= limit_bytes:
        return png, "png"
    with Image.open(io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
        for quality in (90, 75, 60, 40):
            buf = io.BytesIO()
            rgb.save(buf, format="WEBP", quality=quality)
            if buf.tell() <= limit_bytes:
                return buf.getvalue(), "webp"
            rgb.thumbnail((rgb.width * 3 // 4, rgb.height * 3 // 4))
    return buf.getvalue(), "webp"


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file renamed into place: it appears complete or not at all."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Pictures are drawn one at a time on their own thread: drawing holds the GIL for most of
        # its milliseconds, and a burst of plans drawn on many threads at once would starve the
        # event loop (and every user's next step) of it.
        self._drawing = ThreadPoolExecutor(1, thread_name_prefix="lmd-draw")

    def check_writable(self) -> None:
        """Refuse to start with an image folder the bot cannot write (ConfigError naming
        ``storage.image_dir``): otherwise every render would fail at its last step."""
        probe = self.root / ".write-check"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _write_whole(probe, b"ok")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"storage.image_dir: cannot write images to {self.root} ({reason})") from None

    async def save(self, *, scene_id: int, job_id: int, png: bytes, overlay_png: bytes) -> tuple[str, str]:
        """Write a render and its overlay; both or neither (OSError)."""

        def write() -> tuple[str, str]:
            folder = self.root / f"scene-{scene_id}"
            folder.mkdir(parents=True, exist_ok=True)
            image, overlay = folder / f"job-{job_id}.png", folder / f"job-{job_id}-overlay.png"
            _write_whole(image, png)
            try:
                _write_whole(overlay, overlay_png)
            except BaseException:
                with contextlib.suppress(OSError):
                    image.unlink()
                raise
            return str(image), str(overlay)

        return await asyncio.to_thread(write)

    async def load(self, path: str | None) -> bytes | None:
        if not path:
            return None
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        except OSError:
            return None

    async def plan_picture(self, layout: SceneLayout) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._drawing, draw_overlay, layout)

    async def overlay(self, layout: SceneLayout, png: bytes, missing: tuple[int, ...] = ()) -> bytes:
        """``layout`` over the image; ``missing``: objects the self-check did not find (marked)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._drawing, _overlay_on, layout, png, missing
        )
