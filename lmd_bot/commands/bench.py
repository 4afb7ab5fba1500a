"""``lmd-bot bench``: benchmarks that print figures (never tests: no pass/fail on speed).

``lmd-bot bench render`` measures stage 2 per mode and object count: wall time per image, UNet
calls (denoising and guidance forward+backward), SAM calls, per-object runs done and reused, peak
memory, the time relative to plain SD at the same step count and the compute in **sd units**
(:mod:`lmd_bot.diffusion.cost`: the model calls the render made, weighted by their FLOPs on the
full-size architectures; 1 = plain SD at 50 steps), all in one run. Random weights never satisfy
the guidance's early stop in practice, so every guided render runs twice: the **worst** case
(the loss never falls below its threshold; its seconds are the ones shown) and the **best** case
(the first loss computed does, so guidance ends after the first guided step), sd units only. For ``lmd`` and
``lmd+`` it also renders the follow-up rounds a scene sees in the bot, through the same renderer
and its per-object cache: ``move`` (every box moved, nothing else) and ``change`` (then one
object's caption changed); and ``unbatched``, the first round again with the per-object runs one
by one as the reference does, to show what batching them buys (compare the ``obj s`` column).
A second table gives the self-check's extra compute per image for ``lmd`` and ``lmd+``: no retry,
one object re-generated on every retry, every object re-generated on every retry
(:mod:`lmd_bot.commands.bench_selfcheck`).

By default it runs the tiny random-weight models on the CPU (plumbing cost, not real cost);
``--full-size`` builds SD v1.5's, GLIGEN's and SAM ViT-B's real architectures with random weights
on the best device (no download), which costs exactly what the trained models cost. ``--shapes``
runs the shapes world's trained models (docs/shapes.md) on scenes of its own vocabulary, and adds
a third case, **model**: the method's own early stop on losses a trained model computes, so the
sd units of a render as it happens rather than its bounds.

More benchmarks join the group by listing their module in ``BENCHMARKS``: like a top-level
command, a module has ``add_parser(subparsers)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

from lmd_bot.layout.canvas import SQUARE_512, Aspect, Canvas, canvas_for, fit
from lmd_bot.rendering import RenderMode

# Modules providing ``lmd-bot bench NAME`` besides ``render`` (defined here).
BENCHMARKS: tuple[str, ...] = (
    "lmd_bot.commands.bench_bot",
    "lmd_bot.commands.bench_flops",
    "lmd_bot.commands.bench_queue",
)

_MODES = (RenderMode.SD, RenderMode.LMD, RenderMode.LMD_PLUS, RenderMode.FAST)
# Pixels every box moves down in the "move" round: the grid's boxes stay on the canvas.
_MOVE_PX = 48
_CAPTIONS = ("a red apple", "a gray cat", "a blue car", "a brown dog", "a green bottle", "a white teapot")
# The same scenes in the shapes world's vocabulary (--shapes).
_SHAPES_CAPTIONS = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow diamond",
    "a purple circle",
    "an orange square",
)


@dataclass(frozen=True)
class _Scenes:
    """The captions and background of the benchmark's scenes."""

    captions: tuple[str, ...]
    changed: str  # the first object's caption in the "change" round
    background: str


_PHOTO = _Scenes(_CAPTIONS, "a purple plum", "A realistic photo of a kitchen")
_SHAPES = _Scenes(_SHAPES_CAPTIONS, "a purple triangle", "a white wall")


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
        help="stage-2 cost per mode, object count and follow-up round",
        description=(
            "Seconds per image, UNet calls, SAM calls, per-object runs and reuse, and peak memory per "
            "mode and object count, with follow-up rounds (move, change one object) and the per-object "
            "runs unbatched. Tiny random models on the CPU by default; --full-size for the real "
            "architectures (SD v1.5, GLIGEN, SAM ViT-B) with random weights."
        ),
    )
    models = p.add_mutually_exclusive_group()
    models.add_argument(
        "--full-size", action="store_true", help="SD v1.5 + GLIGEN + SAM ViT-B architectures, random"
    )
    models.add_argument(
        "--shapes",
        action="store_true",
        help="the shapes world's trained models (64 px, no SAM) and a column for their own early stop",
    )
    p.add_argument(
        "--modes", default=",".join(_MODES), help=f"comma-separated modes (default: {','.join(_MODES)})"
    )
    p.add_argument("--objects", type=_int_list, default=[1, 3, 6], help="object counts (default 1,3,6)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50, the method's)")
    p.add_argument("--size", type=int, help="longer image side (default: 256 tiny, 512 full size)")
    p.add_argument(
        "--aspect",
        default="1:1",
        choices=[a.value for a in Aspect],
        help="the scenes' aspect ratio (default 1:1); sides are multiples of 64",
    )
    p.add_argument("--no-sam", action="store_true", help="masks from attention instead of SAM")
    p.add_argument(
        "--compile-guidance",
        action="store_true",
        help="torch.compile the guidance loss (diffusion.compile_guidance)",
    )
    p.add_argument("--no-follow-ups", action="store_true", help="skip the move / change / unbatched rows")
    p.add_argument(
        "--candidates",
        type=int,
        default=4,
        choices=range(1, 5),
        metavar="N",
        help="also render each first round as N candidates in one batch and compare it with one image "
        "(default 4; 1: skip)",
    )
    p.add_argument(
        "--check-retries",
        type=int,
        default=2,
        choices=range(6),
        metavar="N",
        help="the self-check's retries in its cost table (default 2, as diffusion.check_retries)",
    )
    p.add_argument("--no-self-check", action="store_true", help="skip the self-check's cost table")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="full size only")
    p.set_defaults(func=run_render)


def bench_layout(
    n_objects: int,
    *,
    moved: bool = False,
    changed: bool = False,
    canvas: Canvas = SQUARE_512,
    scenes: _Scenes = _PHOTO,
):
    """``n_objects`` distinct objects in non-overlapping boxes of a 3x2 grid on ``canvas`` (laid
    out on 512x512 and scaled to it); ``moved``: every box 48 px (of 512) lower; ``changed``: the
    first object is something else."""
    from lmd_bot.layout.schema import SceneLayout

    sx, sy = canvas.width / 512, canvas.height / 512
    objects = []
    for i in range(n_objects):
        col, row = i % 3, i // 3
        caption = scenes.changed if changed and i == 0 else scenes.captions[i]
        y = 60 + row * 220 + (_MOVE_PX if moved else 0)
        box = [round((16 + col * 166) * sx), round(y * sy), round(150 * sx), round(180 * sy)]
        objects.append({"id": i + 1, "caption": caption, "box": box})
    return SceneLayout.model_validate(
        {
            "objects": objects,
            "background": scenes.background,
            "width": canvas.width,
            "height": canvas.height,
        }
    )


def _guidance_case(params, *, best: bool | None):
    """Worst: a threshold of 0, which no loss falls below; best: a threshold just under the carried
    loss a run starts from, which every loss computed (40 at most with the defaults) is below;
    None: the threshold as configured (the model's own losses decide)."""
    from lmd_bot.diffusion.guidance import INITIAL_LOSS

    if best is None:
        return params
    threshold = INITIAL_LOSS / params.loss_scale * 0.999 if best else 0.0
    return params.model_copy(update={"loss_threshold": threshold})


def case_pipeline(
    components, *, best: bool | None, object_batch_size: int = 8, compile_guidance: bool = False
):
    """A pipeline with the default settings of every mode but the guidance's early stop: never
    (worst case), right after the first loss computed (best case), or as configured (None)."""
    from lmd_bot.diffusion.params import FastParams, LmdParams
    from lmd_bot.diffusion.pipeline import LmdPipeline

    def controller(params: LmdParams) -> LmdParams:
        return params.model_copy(
            update={
                "object_guidance": _guidance_case(params.object_guidance, best=best),
                "overall_guidance": _guidance_case(params.overall_guidance, best=best),
            }
        )

    fast = FastParams()
    return LmdPipeline(
        components,
        lmd=controller(LmdParams()),
        lmd_plus=controller(LmdParams.lmd_plus()),
        fast=fast.model_copy(update={"guidance": _guidance_case(fast.guidance, best=best)}),
        object_batch_size=object_batch_size,
        compile_guidance=compile_guidance,
    )


def _say(text: str) -> None:
    print(text, flush=True)  # noqa: T201 - a benchmark's output is its printed table


def run_render(args: argparse.Namespace) -> int:
    import torch

    from lmd_bot.diffusion.cache import ObjectCache
    from lmd_bot.diffusion.components import select_device, select_dtype
    from lmd_bot.diffusion.cost import CostMeter, load_flop_table
    from lmd_bot.diffusion.renderer import DiffusionRenderer
    from lmd_bot.diffusion.tiny import full_size_components, tiny_components
    from lmd_bot.errors import LmdError
    from lmd_bot.rendering import RenderMode, RenderRequest

    if not 1 <= args.steps <= 150:  # before the models are built
        raise LmdError("--steps must be between 1 and 150")
    names = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in names if m not in _MODES]
    if unknown or not names:
        raise LmdError(f"bench render measures {', '.join(_MODES)} (not {', '.join(unknown) or 'nothing'})")
    if args.full_size:
        device = select_device(args.device)
        dtype = select_dtype("auto", device)
        size = args.size or 512
        components = full_size_components(device, dtype, sam=not args.no_sam)
        label = (
            f"full-size SD v1.5 + GLIGEN architectures, random weights, {device.type} "
            f"{str(dtype).split('.')[-1]}"
        )
        if device.type == "cpu":
            print("warning: full size on the CPU takes many minutes per image", file=sys.stderr)  # noqa: T201
    elif args.shapes:
        from lmd_bot.config import DiffusionSettings
        from lmd_bot.diffusion.loading import load_components
        from lmd_bot.shapes.assets import shapes_diffusion_settings
        from lmd_bot.shapes.world import IMAGE_SIZE

        size = args.size or IMAGE_SIZE
        settings = DiffusionSettings(device="cpu", dtype="float32")
        components = load_components(shapes_diffusion_settings(settings))
        label = f"shapes-world trained models, cpu float32, {torch.get_num_threads()} threads"
    else:
        size = args.size or 256
        components = tiny_components(sam=not args.no_sam)
        label = f"tiny random models, cpu float32, {torch.get_num_threads()} threads"
    cache = ObjectCache(8 * 2**30)  # holds every run of the benchmark: reuse is never cut short
    # The cases' object runs have different cache keys (their settings differ): one cache. On
    # trained models (--shapes) also the pipeline as configured: its own losses stop guidance.
    cases = {"worst": False, "best": True} | ({"model": None} if args.shapes else {})
    renderers = {
        case: DiffusionRenderer(
            case_pipeline(components, best=best, compile_guidance=args.compile_guidance),
            size=size,
            cache=cache,
        )
        for case, best in cases.items()
    }
    one_by_one = DiffusionRenderer(
        case_pipeline(components, best=False, object_batch_size=1, compile_guidance=args.compile_guidance),
        size=size,
    )
    table = load_flop_table()
    meter = CostMeter()
    sam = "off" if args.no_sam or args.shapes else "on"
    compiled = ", guidance loss compiled" if args.compile_guidance else ""
    canvas = canvas_for(Aspect(args.aspect), 512)  # planned on the planner's frame, drawn at size
    drawn = fit(canvas.width, canvas.height, size)
    scenes = _SHAPES if args.shapes else _PHOTO

    def layout(n: int, **changes):
        return bench_layout(n, canvas=canvas, scenes=scenes, **changes)

    _say(f"lmd-bot bench render: {label}; {drawn} ({args.aspect}), {args.steps} steps, SAM {sam}{compiled}")

    # Warm up both UNets (first-call allocations, kernel selection) outside the measurements; the
    # step count differs, so nothing here is reused from the cache later.
    warm_steps = 2 if args.steps != 2 else 3
    for mode in (RenderMode.LMD, RenderMode.LMD_PLUS):
        renderers["worst"].render(RenderRequest(layout=layout(1), mode=mode, steps=warm_steps))

    header = (
        f"{'mode':<5} {'round':<9} {'objects':>7} {'s/image':>8} {'obj s':>7} {'UNet':>6} {'fwd':>5} "
        f"{'guided':>6} {'SAM':>4} {'runs':>4} {'reused':>6} {'peak MB':>8} {'x sd':>6} {'sd u':>6} "
        f"{'best u':>6} {'model u':>7}"
    )
    _say(header)
    _say("-" * len(header))

    def metered(which, request):
        meter.reset()
        with meter.attach(components):
            out = which.render(request)
        return out, meter.units(table)

    def measure(
        mode: RenderMode, round_name: str, n, layout, sd_seconds: float | None, candidates: int = 1
    ) -> tuple[float, float]:
        request = RenderRequest(
            layout=layout, prompt="a photo", mode=mode, seed=0, steps=args.steps, candidates=candidates
        )
        unbatched = round_name == "unbatched"
        out, units = metered(one_by_one if unbatched else renderers["worst"], request)
        # sd: nothing guided; unbatched: the batched round's calls, in smaller batches.
        nothing_guided = mode is RenderMode.SD or unbatched
        best = "-" if nothing_guided else f"{metered(renderers['best'], request)[1]:6.2f}"
        model = "-"
        if "model" in renderers and not nothing_guided:
            model = f"{metered(renderers['model'], request)[1]:7.2f}"
        st = out.stats
        peak = st.get("peak_gpu_mb", st.get("peak_rss_mb", 0.0))
        calls = st["unet_forwards"] + st["guided_passes"]
        ratio = f"{out.seconds / sd_seconds:6.2f}" if sd_seconds else f"{'1.00':>6}"
        _say(
            f"{mode.value:<5} {round_name:<9} {n:>7} {out.seconds:8.2f} {st['object_seconds']:7.2f} "
            f"{calls:6.0f} "
            f"{st['unet_forwards']:5.0f} {st['guided_passes']:6.0f} {st['sam_calls']:4.0f} "
            f"{st['object_runs']:4.0f} {st['object_cache_hits']:6.0f} {peak:8.0f} {ratio} "
            f"{units:6.2f} {best:>6} {model:>7}"
        )
        return out.seconds, units

    # Plain SD ignores the layout: one measurement stands for every object count, and the ratios.
    sd_seconds, sd_units = measure(RenderMode.SD, "first", "any", layout(0), None)
    k = args.candidates
    grids = []  # (mode, objects, time ratio, sd units ratio) of k candidates over one image
    if k > 1 and RenderMode.SD.value in names:
        seconds, units = measure(RenderMode.SD, f"{k}-cand", "any", layout(0), sd_seconds, k)
        grids.append((RenderMode.SD, "any", seconds / sd_seconds, units / sd_units))
    for mode in (RenderMode(m) for m in names):
        if mode is RenderMode.SD:
            continue
        for n in args.objects:
            cache.clear()  # a first round computes everything
            one = measure(mode, "first", n, layout(n), sd_seconds)
            if k > 1:
                cache.clear()
                grid = measure(mode, f"{k}-cand", n, layout(n), sd_seconds, k)
                grids.append((mode, n, grid[0] / one[0], grid[1] / one[1]))
            if mode in (RenderMode.LMD, RenderMode.LMD_PLUS) and n and not args.no_follow_ups:
                measure(mode, "move", n, layout(n, moved=True), sd_seconds)
                measure(mode, "change", n, layout(n, moved=True, changed=True), sd_seconds)
                if n > 1:
                    measure(mode, "unbatched", n, layout(n), sd_seconds)
    if not args.no_self_check:
        from lmd_bot.commands.bench_selfcheck import check_lines, measure_check_cost

        costs = [
            measure_check_cost(
                renderers["worst"].pipeline,
                mode=mode,
                layout=layout(n),
                steps=args.steps,
                size=size,
                retries=args.check_retries,
                metered=metered,
                cache=cache,
            )
            for mode in (RenderMode(m) for m in names)
            if mode in (RenderMode.LMD, RenderMode.LMD_PLUS)
            for n in args.objects
            if n
        ]
        _say("")
        for line in check_lines(costs, args.check_retries):
            _say(line)
    kind = "GPU memory allocated (per image)" if components.device.type == "cuda" else "process peak RSS"
    _say(
        f"UNet: UNet calls (fwd: denoising, CFG batches of all objects count once; guided: guidance "
        f"forward+backward); obj s: per-object stage; runs/reused: objects denoised / taken from the "
        f"cache; peak MB: {kind}; x sd: time over plain SD's at {args.steps} steps. Seconds and calls "
        f"are the worst case (guidance never stops early).\n"
        f"Compute (sd u / best u): the worst / best case (guidance stops after the first guided step) "
        f"in sd units{'' if args.shapes else ' (model u: --shapes only)'}; model u: the method's own "
        f"early stop on the model's losses; the calls made weighted by their FLOPs on the full-size "
        f"models at "
        f"{table.image_size} px; 1 sd unit = plain SD at 50 steps = {table.sd_gflops() / 1000:.1f} "
        f"TFLOPs (table: lmd-bot bench flops)"
    )
    if grids:
        _say(
            f"{k} candidates (one batched job: the per-object runs of every seed share UNet calls of "
            f"up to {renderers['worst'].pipeline.object_batch_size} objects, the overall runs "
            f"are one batch) over one image of the same scene:"
        )
        for mode, n, time_ratio, units_ratio in grids:
            _say(
                f"  {mode.value:<5} {n} objects: {time_ratio:5.2f}x the time, "
                f"{units_ratio:5.2f}x the sd units"
            )
        _say(
            "  sd units count FLOPs, which grow with the batch; on a GPU the batch runs in parallel, "
            "so the time is the figure to hold to 2x"
        )
    return 0
