"""The ``lmd-bot`` command line.

Each subcommand lives in its own module under :mod:`lmd_bot.commands` with two functions:
``add_parser(subparsers)`` (cheap: argparse only) and ``run(args) -> int``, which imports what it
needs. ``lmd-bot --help`` therefore loads no torch, diffusers or discord and answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from lmd_bot import __version__
from lmd_bot.errors import LmdError
from lmd_bot.logs import configure_logging

# Subcommand modules under lmd_bot.commands, in the order --help lists them.
COMMANDS = ("run", "worker", "layout", "plan", "eval", "render", "bench", "chat", "shapes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmd-bot",
        description="Draw what people asked for: an LLM plans the layout, Stable Diffusion follows it.",
    )
    parser.add_argument("--version", action="version", version=f"lmd-bot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"lmd_bot.commands.{name}")
        module.add_parser(sub)
    return parser


def _log_level(verbose: bool) -> str:
    """``-v``: DEBUG; else the configured ``log_level``. A configuration that does not load
    logs at INFO here: the command that needs it says what is wrong."""
    if verbose:
        return "DEBUG"
    from lmd_bot.config import load_settings

    try:
        return load_settings().log_level
    except LmdError:
        return "INFO"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(_log_level(args.verbose))
    try:
        return int(args.func(args) or 0)
    except LmdError as exc:
        logging.getLogger("lmd_bot").debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - the CLI's user-facing output
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
