"""Layout files users post in a scene's thread: checked for size before they are fetched."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lmd_bot.errors import LayoutError
from lmd_bot.layout.io import decode_text

MAX_LAYOUT_FILE_BYTES = 64 * 1024  # a 64-object layout is about 6 KB


@dataclass(frozen=True)
class AttachedFile:
    """A file a user posted: its name, its size, and how to fetch its bytes."""

    name: str
    size: int
    read: Callable[[], Awaitable[bytes]]


async def layout_text(file: AttachedFile) -> str:
    """The file's text, read only if it is small enough to be a layout."""
    if file.size > MAX_LAYOUT_FILE_BYTES:
        raise LayoutError(
            f"{file.name} is {file.size:,} bytes; a layout file is at most {MAX_LAYOUT_FILE_BYTES:,}"
        )
    return decode_text(await file.read(), file.name)
