"""``lmd-bot layout``: check, convert and draw layout files (JSON or LMD text)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layout", help="validate a layout file, convert it, draw its plan picture")
    p.add_argument("file", type=Path, help="a layout as JSON or in the LMD text format ('-' for stdin)")
    p.add_argument("--to", choices=("json", "lmd"), default="json", help="format to print")
    p.add_argument("--overlay", type=Path, help="write the plan picture (PNG) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmd_bot.commands import check_writable, write_output
    from lmd_bot.layout import format_lmd_text
    from lmd_bot.layout.io import decode_text, load_layout_text, read_text_file

    if args.overlay:
        check_writable(args.overlay, "plan picture")
    if str(args.file) == "-":  # the bytes, decoded as a file's are (the terminal's encoding may not be UTF-8)
        text = decode_text(sys.stdin.buffer.read(), "stdin")
    else:
        text = read_text_file(args.file, "layout file")
    result = load_layout_text(text)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)  # noqa: T201
    layout = result.layout
    out = (
        format_lmd_text(layout)
        if args.to == "lmd"
        else json.dumps(layout.model_dump(), indent=2, ensure_ascii=False)
    )
    print(out)  # noqa: T201
    if args.overlay:
        from lmd_bot.overlay import draw_overlay

        write_output(args.overlay, draw_overlay(layout), "plan picture")
        print(f"wrote {args.overlay}", file=sys.stderr)  # noqa: T201
    return 0
