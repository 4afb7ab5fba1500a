"""``lmd-bot bench flops``: the FLOP table behind ``bench render``'s sd units.

Measures the FLOPs of one sample of every kind of model call (UNet denoising and guidance passes,
with and without GLIGEN's fusers, the guidance backward, VAE decode, SAM, text encoder) on the
full-size architectures built on the meta device, and prints them, in GFLOPs and in UNet
forwards. ``--write`` replaces the committed table (:data:`lmd_bot.diffusion.cost.FLOP_TABLE_PATH`).
No weights, GPU or download needed; about a minute on a CPU.
"""

from __future__ import annotations

import argparse


def add_parser(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "flops",
        help="measure the FLOPs per model call that weight bench render's sd units",
        description=(
            "FLOPs of each kind of model call on the full-size SD v1.5 / GLIGEN / SAM ViT-B / CLIP "
            "architectures, built on the meta device (no weights); --write updates the committed table."
        ),
    )
    p.add_argument("--write", action="store_true", help="replace the committed table with the new one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmd_bot.diffusion.cost import FLOP_TABLE_PATH, load_flop_table, measure_flop_table

    table = measure_flop_table()
    relative = table.relative()
    committed = load_flop_table() if FLOP_TABLE_PATH.exists() else None
    print(f"GFLOPs per sample at {table.image_size} px (torch {table.torch_version})")  # noqa: T201
    for kind, value in table.gflops.items():
        was = f"  (committed: {committed.gflops[kind]:.3f})" if committed else ""
        print(f"{kind.value:<26} {value:10.3f}  = {relative[kind]:6.3f} UNet forwards{was}")  # noqa: T201
    print(f"1 sd unit = {table.sd_gflops():.1f} GFLOPs")  # noqa: T201
    if args.write:
        FLOP_TABLE_PATH.write_text(table.model_dump_json(indent=2) + "\n")
        print(f"written to {FLOP_TABLE_PATH}")  # noqa: T201
    return 0
