"""``lmd-bot eval``: the LMD benchmark (prompts, layouts, image generation, image scoring).

- ``eval prompts``: print the 400 prompts with their task;
- ``eval layouts --responses FILE`` or ``--planner anthropic``: score layouts (stage 1);
- ``eval generate --mode M --layouts FILE``: render one image per prompt into a folder;
- ``eval images --dir DIR``: score the images with OWL-ViT and OWLv2 (stage 1+2).

Reports (Markdown, JSON, PNG plot) go to the ``--out`` folder. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmd_bot.commands import output_folder
from lmd_bot.errors import LmdError
from lmd_bot.rendering import Refine, RenderMode, SdBaseline

if TYPE_CHECKING:
    from lmd_bot.eval.planning import PlanRun
    from lmd_bot.eval.prompts import BenchmarkPrompt
    from lmd_bot.eval.report import Report
    from lmd_bot.shapes.evaluate import CheckedRuns

MODES = tuple(mode.value for mode in RenderMode)
SD_BASELINES = tuple(baseline.value for baseline in SdBaseline)


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - the CLI's progress output


def _index_spec(text: str) -> list[int]:
    """'0-9,100,200-203' -> sorted indexes in 0..399."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi or lo)
            if not 0 <= first <= last <= 399:
                raise ValueError
            out.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of indexes in 0-399 like '0-9,100,200-203'"
        ) from None
    return sorted(out)


def _bounded(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low:g} to {high:g}")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run the LMD benchmark on layouts and images")
    ev = p.add_subparsers(dest="eval_command", metavar="STEP", required=True)

    pr = ev.add_parser("prompts", help="print the benchmark's 400 prompts")
    pr.add_argument("--json", action="store_true", help="print JSON with each prompt's facts")
    pr.set_defaults(func=run_prompts)

    la = ev.add_parser("layouts", help="score layouts (stage 1) from recorded answers or a planner")
    src = la.add_mutually_exclusive_group(required=True)
    src.add_argument("--responses", type=Path, help="JSON: prompt -> list of raw LMD-text answers")
    src.add_argument("--planner", choices=("anthropic", "openai"), help="plan the prompts with this backend")
    la.add_argument(
        "--out",
        type=output_folder,
        default=Path("benchmark/layouts"),
        help="report folder (and answers)",
    )
    la.add_argument("--concurrency", type=int, default=4, help="planner calls at once (default 4)")
    la.add_argument("--yes", action="store_true", help="start planning without asking about the cost")
    la.set_defaults(func=run_layouts)

    ge = ev.add_parser("generate", help="render one image per prompt (resumable)")
    ge.add_argument("--mode", choices=MODES, help="rendering mode (default: the configured one)")
    ge.add_argument("--layouts", type=Path, help="recorded answers (JSON: prompt -> answers); not for sd")
    ge.add_argument("--out", type=output_folder, help="image folder (default benchmark/images/<mode>)")
    ge.add_argument(
        "--steps", type=_bounded(int, 1, 150), help="denoising steps (default: the configured ones)"
    )
    ge.add_argument(
        "--guidance-scale", type=_bounded(float, 0, 30), help="CFG scale (default: the configured one)"
    )
    ge.add_argument("--indexes", type=_index_spec, help="only these prompts, e.g. '0-9,100,200-203'")
    ge.add_argument("--tiny", action="store_true", help="tiny random-weight models: a CPU plumbing run")
    ge.add_argument(
        "--self-check",
        action="store_true",
        help="check and fix each image with diffusion.check_detector (off by default: the published "
        "numbers have no self-check); score it with the other detector",
    )
    ge.add_argument(
        "--refine",
        choices=("on", "off"),
        help="SDXL refinement of every image, scored as refined (default: on where diffusion.refine "
        'is "on"); a folder records which',
    )
    ge.add_argument(
        "--sd-baseline",
        choices=SD_BASELINES,
        default=SdBaseline.REFERENCE.value,
        help=(
            "what --mode sd runs: 'reference' (default: the published SD column's sampler, SD v1.5's "
            "PNDM, noise drawn on the device, float32) or 'controller' (the bot's DDIM sd mode)"
        ),
    )
    ge.set_defaults(func=run_generate)

    im = ev.add_parser("images", help="score benchmark images with OWL-ViT and OWLv2 (stage 1+2)")
    im.add_argument("--dir", type=Path, required=True, help="the folder 'eval generate' wrote")
    im.add_argument("--out", type=output_folder, help="report folder (default DIR/eval)")
    im.add_argument(
        "--detectors",
        nargs="+",
        choices=("owlvit", "owlv2"),
        default=["owlvit", "owlv2"],
        help="default: both",
    )
    im.add_argument("--owlvit-model", help="OWL-ViT hub id or folder (default google/owlvit-base-patch32)")
    im.add_argument(
        "--owlv2-model", help="OWLv2 hub id or folder (default google/owlv2-base-patch16-ensemble)"
    )
    im.add_argument("--score-threshold", type=float, default=0.15, help="detection score threshold (0.15)")
    im.add_argument("--nms-threshold", type=float, default=0.15, help="class-aware NMS IoU threshold (0.15)")
    im.add_argument("--device", default="auto", help="auto, cuda, cpu, ...")
    im.set_defaults(func=run_images)

    sh = ev.add_parser("shapes", help="the benchmark's four tasks in the shapes world (docs/shapes.md)")
    sh.add_argument("--modes", default="sd,lmd,lmd+,fast", help="comma-separated modes (default all four)")
    sh.add_argument("--per-task", type=_bounded(int, 1, 100), default=100, help="prompts per task (100)")
    sh.add_argument("--steps", type=_bounded(int, 1, 150), default=50, help="denoising steps (50)")
    sh.add_argument("--guidance-scale", type=_bounded(float, 0, 30), default=7.5, help="CFG scale (7.5)")
    sh.add_argument("--weights", type=Path, help="folder with sd/ and gligen/ (default: the committed ones)")
    sh.add_argument(
        "--out",
        type=output_folder,
        default=Path("benchmark/shapes"),
        help="images and report folder",
    )
    sh.add_argument(
        "--self-check",
        action="store_true",
        help="also render lmd and lmd+ with the self-check, and compare (docs/selfcheck.md)",
    )
    sh.add_argument(
        "--check-detector",
        choices=("shapes", "owlv2", "owlvit"),
        default="shapes",
        help="the self-check's detector (default shapes: the scorer too, so the report flags the gain)",
    )
    sh.add_argument("--check-model", default="", help="OWL hub id or folder for --check-detector")
    sh.add_argument(
        "--check-retries", type=_bounded(int, 0, 5), default=2, help="re-renders per image at most (2)"
    )
    sh.set_defaults(func=run_shapes)


def run_prompts(args: argparse.Namespace) -> int:
    from lmd_bot.eval.prompts import lmd_benchmark_prompts

    prompts = lmd_benchmark_prompts()
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in prompts], indent=2))  # noqa: T201
    else:
        for p in prompts:
            print(f"{p.index}\t{p.task.value}\t{p.prompt}")  # noqa: T201
    return 0


def _finish(report: Report, out: Path) -> int:
    paths = report.write(out)
    for run in report.runs:
        acc = run.accuracies()
        cells = ", ".join(f"{k} {'–' if v is None else f'{v:.1f}'}" for k, v in acc.items())
        missing = len(run.missing())
        _say(f"{run.name}: {cells}" + (f" ({missing} prompts not evaluated)" if missing else ""))
    _say("wrote " + ", ".join(str(p) for p in paths))
    return 0


# --- layouts ---------------------------------------------------------------------------------


def run_layouts(args: argparse.Namespace) -> int:
    from lmd_bot.eval.generate import file_sha256
    from lmd_bot.eval.layouts import evaluate_layouts
    from lmd_bot.eval.prompts import lmd_benchmark_prompts
    from lmd_bot.eval.published import PUBLISHED_LAYOUTS
    from lmd_bot.eval.report import Report, Run
    from lmd_bot.eval.responses import load_responses

    prompts = lmd_benchmark_prompts()
    settings: dict[str, Any] = {
        "prompts": f"{len(prompts)} (docs/method.md, 'Benchmark prompts')",
        "box filter": "the reference's filter_boxes(scale_boxes=False) (docs/method.md, 'Layout scoring')",
    }
    failures: dict[str, list[str]] = {}
    if args.responses:
        responses = load_responses(args.responses)
        settings["answers"] = f"{args.responses} (sha256 {file_sha256(args.responses)[:16]})"
        name = "layouts"
    else:
        responses, failures, extra = _plan_layouts(args, prompts)
        settings.update(extra)
        name = extra["planner"]
    run = Run(name=name, items=evaluate_layouts(prompts, responses, failures=failures))
    report = Report(
        stage="layouts",
        title="LMD benchmark: layout accuracy (stage 1)",
        settings=settings,
        runs=[run],
        published=list(PUBLISHED_LAYOUTS),
    )
    return _finish(report, args.out)


def _plan_layouts(
    args: argparse.Namespace, prompts: tuple[BenchmarkPrompt, ...]
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, Any]]:
    from lmd_bot.config import load_settings
    from lmd_bot.eval.cost import estimate_cost, usage_cost
    from lmd_bot.eval.planning import pending_calls, plan_benchmark
    from lmd_bot.eval.responses import load_responses

    if args.concurrency < 1:
        raise LmdError("--concurrency must be at least 1", user_message="--concurrency must be at least 1.")
    settings = load_settings()
    settings = settings.model_copy(
        update={"planner": settings.planner.model_copy(update={"backend": args.planner})}
    )
    model = settings.planner.model if args.planner == "anthropic" else settings.planner.openai_model
    identity = {"backend": args.planner, "model": model}

    responses_path = args.out / "responses.json"
    identity_path = args.out / "planner.json"
    if identity_path.exists():
        recorded = identity_path.read_text(encoding="utf-8").strip()
        if recorded != json.dumps(identity):
            msg = f"{args.out} holds answers from another planner ({recorded}); use another --out folder."
            raise LmdError(msg, user_message=msg)

    existing = load_responses(responses_path) if responses_path.exists() else {}
    calls = len(pending_calls(prompts, existing))
    estimate = estimate_cost(model, calls)
    if calls:
        _say(f"{calls} of {len(prompts)} prompts still need a layout: {estimate.describe()}.")
    else:
        _say(f"all {len(prompts)} prompts have a recorded layout in {responses_path}; nothing to plan.")
    if calls and not args.yes:
        if not sys.stdin.isatty():
            msg = f"Planning would make {estimate.describe()}. Add --yes to start."
            raise LmdError(msg, user_message=msg)
        if input("Start? [y/N] ").strip().lower() not in ("y", "yes"):
            _say("Not started.")
            raise SystemExit(1)
    args.out.mkdir(parents=True, exist_ok=True)
    identity_path.write_text(json.dumps(identity), encoding="utf-8")

    def progress(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            _say(f"planned {done}/{total}")

    async def plan_all() -> PlanRun:
        from lmd_bot.planner import build_planner

        planner = build_planner(settings)
        try:
            return await plan_benchmark(
                planner, prompts, responses_path, concurrency=args.concurrency, on_answer=progress
            )
        finally:
            await planner.aclose()

    run = asyncio.run(plan_all()) if calls else None
    responses = run.responses if run else existing
    usage = run.usage if run else None
    extra: dict[str, Any] = {"planner": f"{args.planner} {model}", "answers": str(responses_path)}
    if run:
        cost = usage_cost(model, run.usage)
        extra["this run"] = (
            f"{run.planned} answers added, {sum(len(v) for v in run.failures.values())} calls failed; "
            f"tokens in {usage.input_tokens:,} (+{usage.cache_read_tokens:,} cache reads, "
            f"{usage.cache_write_tokens:,} cache writes), out {usage.output_tokens:,}"
            + (f"; about ${cost:.2f}" if cost is not None else "")
        )
    return responses, run.failures if run else {}, extra


# --- generate --------------------------------------------------------------------------------


def run_generate(args: argparse.Namespace) -> int:
    from lmd_bot.config import load_settings
    from lmd_bot.eval.generate import GenerateSettings, benchmark_layouts, file_sha256, generate_images
    from lmd_bot.eval.prompts import lmd_benchmark_prompts
    from lmd_bot.eval.responses import load_responses
    from lmd_bot.layout import SceneLayout

    settings = load_settings()
    mode = RenderMode(args.mode or settings.diffusion.mode)
    everything = lmd_benchmark_prompts()
    prompts = tuple(everything[i] for i in args.indexes) if args.indexes else everything

    if args.layouts:
        # Over all 400 prompts, so that prompt i gets the same recorded answer whatever --indexes says.
        layouts, problems = benchmark_layouts(everything, load_responses(args.layouts))
        for item in prompts:
            if item.index in problems:
                _say(f"#{item.index}: no usable layout ({problems[item.index]})")
    elif mode is RenderMode.SD:
        layouts = {p.index: SceneLayout() for p in prompts}  # plain SD draws from the prompt alone
    else:
        msg = f"--mode {mode.value} renders layouts: pass --layouts FILE (recorded answers)."
        raise LmdError(msg, user_message=msg)

    # Refined or not, for every image: "button" (on request, in the bot) is "off" here.
    refine = Refine(args.refine) if args.refine else settings.diffusion.refine
    refine = Refine.ON if refine is Refine.ON else Refine.OFF
    diffusion = settings.diffusion.model_copy(update={"self_check": bool(args.self_check), "refine": refine})
    sd_baseline = SdBaseline(args.sd_baseline)
    if mode is RenderMode.SD and sd_baseline is SdBaseline.REFERENCE:
        diffusion = diffusion.model_copy(update={"dtype": "float32"})  # the reference's SD is float32
    steps = args.steps or diffusion.steps
    guidance = diffusion.guidance_scale if args.guidance_scale is None else args.guidance_scale
    gen_settings = GenerateSettings(
        mode=mode,
        steps=steps,
        guidance_scale=guidance,
        layouts_file=str(args.layouts) if args.layouts else None,
        layouts_sha256=file_sha256(args.layouts) if args.layouts else None,
        renderer={
            **diffusion.model_dump(mode="json", exclude={"mode", "steps", "guidance_scale", "device"}),
            "tiny": args.tiny,
            **({"sd_baseline": sd_baseline.value} if mode is RenderMode.SD else {}),
        },
    )
    out = args.out or Path("benchmark/images") / mode.value

    from lmd_bot.diffusion.renderer import build_renderer

    renderer = build_renderer(diffusion, tiny=args.tiny, sd_baseline=sd_baseline, check=args.self_check)
    if args.self_check and renderer.checker is None:
        msg = "--self-check needs a checking detector that loads (diffusion.check_detector); see the log."
        raise LmdError(msg, user_message=msg)
    total = len(prompts)
    position = 0

    def progress(item: BenchmarkPrompt, status: str) -> None:
        nonlocal position
        position += 1
        if status != "skipped":
            _say(f"[{position}/{total}] #{item.index} {status}")

    summary = generate_images(prompts, layouts, renderer, out, gen_settings, on_image=progress)
    _say(
        f"{len(summary.rendered)} rendered, {len(summary.skipped)} already there, "
        f"{len(summary.failed)} failed in {summary.seconds:.0f} s; images in {out}"
    )
    if summary.failed:
        _say("rerun the same command to retry the failed prompts")
    return 1 if summary.failed else 0


# --- images ----------------------------------------------------------------------------------


def run_images(args: argparse.Namespace) -> int:
    from lmd_bot.eval.detector import load_detector
    from lmd_bot.eval.generate import SETTINGS_NAME
    from lmd_bot.eval.images import evaluate_images
    from lmd_bot.eval.prompts import lmd_benchmark_prompts
    from lmd_bot.eval.published import PUBLISHED_IMAGES
    from lmd_bot.eval.report import Report, Run
    from lmd_bot.selfcheck.roles import FLATTERED, roles, same_detector

    if not args.dir.is_dir():
        msg = f"{args.dir} is not a folder of benchmark images (see 'lmd-bot eval generate')."
        raise LmdError(msg, user_message=msg)
    prompts = lmd_benchmark_prompts()
    out = args.out or args.dir / "eval"
    settings: dict[str, Any] = {"images": str(args.dir)}
    recorded = args.dir / SETTINGS_NAME
    mode = None
    if recorded.exists():
        generation = json.loads(recorded.read_text(encoding="utf-8"))
        mode = generation.get("mode")
        for key, value in generation.items():
            if isinstance(value, dict):
                settings.update({f"generation: {key}.{k}": v for k, v in value.items()})
            else:
                settings[f"generation: {key}"] = value
    models = {"owlvit": args.owlvit_model, "owlv2": args.owlv2_model}
    checker = _recorded_checker(args.dir)
    notes: list[str] = []

    runs = []
    for kind in dict.fromkeys(args.detectors):
        detector = load_detector(
            kind,
            models[kind],
            device=args.device,
            score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold,
        )
        settings.update({f"{detector.name}: {k}": v for k, v in detector.settings().items()})
        settings[f"{detector.name}: device"] = detector.device
        done = 0

        def progress(_item: object, name: str = detector.name) -> None:
            nonlocal done
            done += 1
            if done % 50 == 0 or done == len(prompts):
                _say(f"{name}: scored {done}/{len(prompts)}")

        items = evaluate_images(prompts, args.dir, detector, on_item=progress)
        # Sources become paths relative to the report, so its image links open from report.md.
        items = [
            i.model_copy(update={"source": os.path.relpath(args.dir / i.source, out)}) if i.source else i
            for i in items
        ]
        role_settings, role_notes = roles(detector.name, checker)
        settings.update({f"{detector.name}: {k}": v for k, v in role_settings.items()})
        notes += role_notes
        flattered = checker is not None and same_detector(detector.name, checker)
        name = detector.name + (f" ({FLATTERED})" if flattered else "")
        runs.append(Run(name=name, items=items))
        del detector  # free its memory before the next detector loads

    title = "LMD benchmark: image accuracy (stage 1+2)" + (f", mode {mode}" if mode else "")
    report = Report(
        stage="images",
        title=title,
        settings=settings,
        runs=runs,
        published=list(PUBLISHED_IMAGES),
        notes=notes,
    )
    return _finish(report, out)


def _recorded_checker(image_dir: Path) -> str | None:
    """The checking detector the images were made with ('eval generate --self-check'), if any."""
    from lmd_bot.eval.generate import SETTINGS_NAME

    path = image_dir / SETTINGS_NAME
    if not path.exists():
        return None
    renderer = json.loads(path.read_text(encoding="utf-8")).get("renderer", {})
    if not renderer.get("self_check") or renderer.get("check_detector") in (None, "none"):
        return None
    return str(renderer["check_detector"])


# --- shapes ----------------------------------------------------------------------------------


def run_shapes(args: argparse.Namespace) -> int:
    from lmd_bot.config import load_settings
    from lmd_bot.diffusion.renderer import build_renderer
    from lmd_bot.rendering import RenderMode
    from lmd_bot.shapes.assets import WEIGHTS_DIR, shapes_diffusion_settings
    from lmd_bot.shapes.benchmark import shapes_prompts, subset
    from lmd_bot.shapes.evaluate import run_benchmark

    try:
        modes = [RenderMode(m.strip()) for m in args.modes.split(",") if m.strip()]
    except ValueError:
        msg = f"--modes {args.modes!r}: choose from {', '.join(MODES)}"
        raise LmdError(msg, user_message=msg) from None
    weights = args.weights or WEIGHTS_DIR
    diffusion = shapes_diffusion_settings(load_settings().diffusion, weights)
    renderer = build_renderer(diffusion)
    checked = _checked_runs(args, renderer) if args.self_check else None
    prompts = subset(shapes_prompts(), args.per_task)
    done = {"n": 0}

    def on_image(mode, prompt, status: str) -> None:
        done["n"] += 1
        if not status.startswith("skipped"):
            _say(f"[{done['n']}/{len(prompts) * len(modes)}] {mode.value} #{prompt.index}: {status}")

    report = run_benchmark(
        prompts,
        modes,
        renderer,
        args.out,
        steps=args.steps,
        guidance_scale=args.guidance_scale,
        renderer_facts={"weights": str(weights)},
        on_image=on_image,
        checked=checked,
    )
    for note in report.notes:
        _say(note)
    return _finish(report, args.out)


def _checked_runs(args: argparse.Namespace, renderer) -> CheckedRuns:
    """A self-checking renderer on the plain one's pipeline and cache (no second model load)."""
    from lmd_bot.diffusion.renderer import DiffusionRenderer
    from lmd_bot.selfcheck.detectors import CheckDetectorKind, build_check_detector
    from lmd_bot.selfcheck.loop import SelfChecker
    from lmd_bot.shapes.evaluate import CheckedRuns

    detector = build_check_detector(CheckDetectorKind(args.check_detector), args.check_model)
    checking = DiffusionRenderer(
        renderer.pipeline,
        size=renderer.size,
        cache=renderer.cache,
        sd_baseline=renderer.sd_baseline,
        checker=SelfChecker(detector, max_retries=args.check_retries),
    )
    return CheckedRuns(renderer=checking, detector=detector.name)
