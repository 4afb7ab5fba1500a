"""``lmd-bot run``: start the Discord bot (the same as ``python bot.py``).

The command line is where the program is put together, so it may reach the Discord adapter
(:mod:`cogs.bot`); it imports it only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start the Discord bot (as python bot.py does)")
    p.add_argument("--sync-global", action="store_true", help="sync slash commands to every server")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return importlib.import_module("cogs.bot").start(sync_global=args.sync_global)
