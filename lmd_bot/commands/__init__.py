"""Subcommands of the ``lmd-bot`` CLI; see :mod:`lmd_bot.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmd_bot.errors import LmdError


class OutputError(LmdError):
    """A file the command was asked to write cannot be written."""


def _file_in_the_way(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists and is no folder."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def check_writable(path: Path, what: str) -> None:
    """Fail before the work (an LLM call, a render) when ``path`` plainly cannot be written."""
    if path.is_dir():
        raise OutputError(f"cannot write the {what} to {path}: it is a folder")
    folder = path.parent
    if folder.is_dir():
        return
    blocker = _file_in_the_way(folder)
    reason = f"{blocker} is a file, not a folder" if blocker else f"the folder {folder} does not exist"
    raise OutputError(f"cannot write the {what} to {path}: {reason}")


def check_new_file(path: Path, what: str) -> None:
    """As :func:`check_writable`, for a file whose missing folders are made when it is written."""
    if path.is_dir():
        raise OutputError(f"cannot write the {what} to {path}: it is a folder")
    if blocker := _file_in_the_way(path.parent):
        raise OutputError(f"cannot write the {what} to {path}: {blocker} is a file, not a folder")


def check_folder(path: Path, what: str) -> None:
    """Fail before the work when the folder ``path`` (made on first use) cannot be one."""
    blocker = _file_in_the_way(path)
    if blocker == path:
        raise OutputError(f"cannot write the {what} to {path}: it is a file, not a folder")
    if blocker is not None:
        raise OutputError(f"cannot write the {what} to {path}: {blocker} is a file, not a folder")


def output_folder(text: str) -> Path:
    """argparse's ``type`` for ``--out FOLDER``: one a file is in the way of is refused before any
    work (the folder itself is made when the command first writes)."""
    path = Path(text)
    try:
        check_folder(path, "output")
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def write_output(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to ``path``, or raise OutputError naming the file and why."""
    check_writable(path, what)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
