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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from lmd_bot.errors import ConfigError
from lmd_bot.grid import candidate_overlays, grid_overlay_png, grid_png
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


def candidate_paths(image_path: str, number: int) -> tuple[str, str]:
    """Where candidate ``number`` (1-based) of the grid saved at ``image_path`` and its overlay are."""
    stem = image_path.removesuffix(".png")
    return f"{stem}-{number}.png", f"{stem}-{number}-overlay.png"


@dataclass(frozen=True)
class ResultPictures:
    """What a result shows: its image and the layout over it. For a grid of candidates, the
    numbered grid, the grid with the layout over each tile, and each candidate's image and own
    overlay (for the pick)."""

    png: bytes
    overlay_png: bytes
    candidates: tuple[tuple[bytes, bytes], ...] = ()


def _result_pictures(
    layout: SceneLayout, png: bytes, missing: tuple[int, ...], candidate_pngs: Sequence[bytes]
) -> ResultPictures:
    if not candidate_pngs:
        return ResultPictures(png, _overlay_on(layout, png, missing))
    overlays = candidate_overlays(layout, candidate_pngs)
    return ResultPictures(
        grid_png(candidate_pngs),
        grid_overlay_png(layout, overlays),
        tuple(zip(candidate_pngs, overlays, strict=True)),
    )


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

    async def save(
        self,
        *,
        scene_id: int,
        job_id: int,
        png: bytes,
        overlay_png: bytes,
        candidates: Sequence[tuple[bytes, bytes]] = (),
    ) -> tuple[str, str]:
        """Write a render and its overlay (a grid: with each candidate's image and overlay, found
        again by :func:`candidate_paths`); all or none (OSError)."""

        def write() -> tuple[str, str]:
            folder = self.root / f"scene-{scene_id}"
            folder.mkdir(parents=True, exist_ok=True)
            image, overlay = folder / f"job-{job_id}.png", folder / f"job-{job_id}-overlay.png"
            files = [(image, png), (overlay, overlay_png)]
            for number, (candidate, candidate_overlay) in enumerate(candidates, start=1):
                paths = candidate_paths(str(image), number)
                files += [(Path(paths[0]), candidate), (Path(paths[1]), candidate_overlay)]
            written: list[Path] = []
            try:
                for path, data in files:
                    _write_whole(path, data)
                    written.append(path)
            except BaseException:
                for path in written:
                    with contextlib.suppress(OSError):
                        path.unlink()
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

    async def result_pictures(
        self,
        layout: SceneLayout,
        png: bytes,
        missing: tuple[int, ...] = (),
        candidate_pngs: Sequence[bytes] = (),
    ) -> ResultPictures:
        """A render's image and its overlay (``missing``: objects the self-check did not find,
        marked); with ``candidate_pngs``, their grids (``png`` unused)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._drawing, _result_pictures, layout, png, missing, candidate_pngs
        )
