"""``lmd-bot bench``: benchmarks that print figures (never tests: no pass/fail on speed).

``lmd-bot bench render`` measures stage 2 per mode and object count: seconds per image, UNet
denoising forwards, guidance forward+backward passes, SAM calls, peak memory, and the time
relative to plain SD. By default it runs the tiny random-weight models on the CPU (plumbing cost,
not real cost); ``--full-size`` builds SD v1.5's and SAM ViT-B's real architectures with random
weights on the best device (no download), which costs exactly what the trained models cost.

More benchmarks join the group by listing their module in ``BENCHMARKS``: like a top-level
command, a module has ``add_parser(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules providing ``lmd-bot bench NAME`` besides ``render`` (defined here).
BENCHMARKS: tuple[str, ...] = ("lmd_bot.commands.bench_bot",)

_CAPTIONS = ("a red apple", "a gray cat", "a blue car", "a brown dog", "a green bottle", "a white teapot")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print timings and costs")
    benches = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    _add_render_parser(benches)
    for module in BENCHMARKS:
        importlib.import_module(module).add_parser(benches)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 or v > len(_CAPTIONS) for v in values):
        raise argparse.ArgumentTypeError(f"object counts must be between 0 and {len(_CAPTIONS)}")
    return values


def _add_render_parser(benches: argparse._SubParsersAction) -> None:
    p = benches.add_parser(
        "render",
        help="stage-2 cost per mode and object count",
        description=(
            "Seconds per image, UNet passes, SAM calls and peak memory per mode and object count. "
            "Tiny random models on the CPU by default; --full-size for SD v1.5's real architecture."
        ),
    )
    p.add_argument("--full-size", action="store_true", help="SD v1.5 + SAM ViT-B architectures, random")
    p.add_argument("--modes", default="sd,lmd", help="comma-separated modes (default: sd,lmd)")
    p.add_argument("--objects", type=_int_list, default=[0, 1, 3, 6], help="object counts (default 0,1,3,6)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50, the method's)")
    p.add_argument("--size", type=int, help="image side (default: 256 tiny, 512 full size)")
    p.add_argument("--no-sam", action="store_true", help="masks from attention instead of SAM")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="full size only")
    p.set_defaults(func=run_render)


def bench_layout(n_objects: int):
    """``n_objects`` distinct objects in non-overlapping boxes of a 3x2 grid on a 512 canvas."""
    from lmd_bot.layout.schema import SceneLayout

    objects = []
    for i in range(n_objects):
        col, row = i % 3, i // 3
        objects.append(
            {"id": i + 1, "caption": _CAPTIONS[i], "box": [16 + col * 166, 60 + row * 220, 150, 180]}
        )
    return SceneLayout.model_validate({"objects": objects, "background": "A realistic photo of a kitchen"})


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a benchmark's output is its printed table


def run_render(args: argparse.Namespace) -> int:
    import torch

    from lmd_bot.diffusion.components import select_device, select_dtype
    from lmd_bot.diffusion.pipeline import LmdPipeline
    from lmd_bot.diffusion.renderer import DiffusionRenderer
    from lmd_bot.diffusion.tiny import full_size_components, tiny_components
    from lmd_bot.errors import LmdError
    from lmd_bot.rendering import RenderMode, RenderRequest

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ("sd", "lmd")]
    if unknown:
        raise LmdError(f"bench render measures 'sd' and 'lmd' (not {', '.join(unknown)})")
    if args.full_size:
        device = select_device(args.device)
        dtype = select_dtype("auto", device)
        size = args.size or 512
        components = full_size_components(device, dtype, sam=not args.no_sam)
        label = f"full-size SD v1.5 architecture, random weights, {device.type} {str(dtype).split('.')[-1]}"
        if device.type == "cpu":
            print("warning: full size on the CPU takes many minutes per image", file=sys.stderr)  # noqa: T201
    else:
        size = args.size or 256
        components = tiny_components(sam=not args.no_sam)
        label = f"tiny random models, cpu float32, {torch.get_num_threads()} threads"
    renderer = DiffusionRenderer(LmdPipeline(components), size=size)
    sam = "off" if args.no_sam else "on"
    _say(f"lmd-bot bench render: {label}; {size}x{size}, {args.steps} steps, SAM {sam}")

    # Warm up (first-call allocations, kernel selection) outside the measurements.
    renderer.render(RenderRequest(layout=bench_layout(1), mode=RenderMode.LMD, steps=2))

    header = (
        f"{'mode':<5} {'objects':>7} {'s/image':>8} {'UNet fwd':>8} {'guided':>7} {'SAM':>4} "
        f"{'peak MB':>8} {'x sd':>6}"
    )
    _say(header)
    _say("-" * len(header))
    sd_seconds = None
    for mode in modes:
        # Plain SD ignores the layout: one measurement stands for every object count.
        counts = [0] if mode == "sd" else args.objects
        for n in counts:
            request = RenderRequest(
                layout=bench_layout(n), prompt="a photo", mode=RenderMode(mode), seed=0, steps=args.steps
            )
            out = renderer.render(request)
            if mode == "sd":
                sd_seconds = out.seconds
            peak = out.stats.get("peak_gpu_mb", out.stats.get("peak_rss_mb", 0.0))
            ratio = f"{out.seconds / sd_seconds:6.1f}" if sd_seconds else f"{'-':>6}"
            _say(
                f"{mode:<5} {'any' if mode == 'sd' else n:>7} {out.seconds:8.2f} "
                f"{out.stats['unet_forwards']:8.0f} {out.stats['guided_passes']:7.0f} "
                f"{out.stats['sam_calls']:4.0f} {peak:8.0f} {ratio}"
            )
    kind = "GPU memory allocated (per image)" if components.device.type == "cuda" else "process peak RSS"
    _say(f"peak MB: {kind}; guided: guidance forward+backward passes (cut after the last guided layer)")
    return 0
