"""``lmd-bot shapes``: the shapes world (docs/shapes.md).

- ``shapes sample``: draw scenes of the world with their captions (a picture sheet);
- ``shapes train``: train the VAE, the base UNet + text encoder and the GLIGEN fusers, resumable;
- ``shapes export``: write a checkpoint's weights as diffusers folders the renderer loads;
- ``shapes probe``: how well cross-attention localises at the layers LMD reads, and whether
  GLIGEN's adapters use their boxes;
- ``shapes score``: the scorecard of a checkpoint or weights folder (:mod:`lmd_bot.shapes.scorecard`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path

from lmd_bot.commands import output_folder

DEFAULT_TRAIN_DIR = Path(".shapes-train")
DEFAULT_WEIGHTS = Path("lmd_bot/assets/shapes")


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 - the CLI's progress output


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shapes", help="the shapes world: sample scenes, train and export its models")
    sh = p.add_subparsers(dest="shapes_command", metavar="STEP", required=True)

    tr = sh.add_parser("train", help="train (or resume training) the shapes models")
    tr.add_argument(
        "--out",
        type=output_folder,
        default=DEFAULT_TRAIN_DIR,
        help="checkpoint folder (git-ignored)",
    )
    tr.add_argument("--seed", type=int, default=0, help="fixes every weight init, batch and noise draw")
    tr.add_argument(
        "--vae-steps", type=int, default=1500, help="VAE step budget (stops early once colours are right)"
    )
    tr.add_argument(
        "--joint-steps", type=int, default=7_700, help="steps of the base (and, every 4th, the adapters)"
    )
    tr.add_argument(
        "--adapter-steps",
        type=int,
        default=200_000,
        help="then GLIGEN adapter steps on the frozen base (stop it any time)",
    )
    tr.add_argument(
        "--gligen-start",
        type=int,
        default=300,
        help="joint steps of the base alone before the adapters learn",
    )
    tr.add_argument("--batch", type=int, default=8, help="scenes per UNet step")
    tr.add_argument(
        "--init",
        type=Path,
        metavar="EXPORT",
        help="a new run starts from this export's weights in the joint phase (no VAE phase)",
    )
    tr.add_argument(
        "--position-weight",
        type=float,
        metavar="W",
        default=0.0,
        help="weight of the base's 'where am I' loss (docs/shapes.md; 1 measured there; 0 = off)",
    )
    tr.add_argument(
        "--route-weight",
        type=float,
        metavar="W",
        default=0.0,
        help="weight of the fusers' routing loss (docs/shapes.md; 0.1 measured there; 0 = off)",
    )
    tr.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)"
    )
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (for log files)")
    tr.set_defaults(func=run_train)

    ex = sh.add_parser("export", help="write a checkpoint's weights as the folders the renderer loads")
    ex.add_argument(
        "--checkpoint", type=Path, default=DEFAULT_TRAIN_DIR / "checkpoint.pt", help="a training checkpoint"
    )
    ex.add_argument("--out", type=output_folder, default=DEFAULT_WEIGHTS, help="folder for sd/ and gligen/")
    ex.add_argument("--live", action="store_true", help="export the live weights, not their moving average")
    ex.set_defaults(func=run_export)

    pr = sh.add_parser(
        "probe",
        help="how well cross-attention localises at the layers LMD reads; whether GLIGEN uses its boxes",
    )
    pr.add_argument(
        "--weights", type=Path, default=DEFAULT_WEIGHTS, help="folder with sd/ (default: committed)"
    )
    pr.set_defaults(func=run_probe)

    sc = sh.add_parser(
        "score",
        help="the figures the committed-model tests assert, for a checkpoint or a weights folder",
        description=(
            "Attention in-mask ratio per layer LMD reads, lmd+ colour margin over sd, objects the "
            "detector finds on the fixed layouts, the move round's unmoved-box change, and a small "
            "'eval shapes' subset; a checkpoint is exported to a temporary folder first."
        ),
    )
    source = sc.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a training checkpoint (exported to a temp folder)")
    source.add_argument("--weights", type=Path, help="folder with sd/ and gligen/ (default: the committed)")
    sc.add_argument("--live", action="store_true", help="with --checkpoint: the live weights, not the EMA")
    sc.add_argument("--eval-modes", default="sd,lmd,lmd+,fast", help="modes of the eval subset ('' for none)")
    sc.add_argument("--eval-per-task", type=int, default=2, help="eval prompts per task (default 2)")
    sc.add_argument("--eval-steps", type=int, default=10, help="eval denoising steps (default 10)")
    sc.add_argument("--out", type=output_folder, help="keep the eval subset's images and report here")
    sc.add_argument("--json", type=Path, help="also write the figures as JSON")
    sc.set_defaults(func=run_score)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from lmd_bot.shapes.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    config = TrainConfig(
        seed=args.seed,
        vae_steps=args.vae_steps,
        joint_steps=args.joint_steps,
        adapter_steps=args.adapter_steps,
        gligen_start=args.gligen_start,
        batch=args.batch,
        checkpoint_minutes=args.checkpoint_minutes,
        position_weight=args.position_weight,
        route_weight=args.route_weight,
    )
    logging.getLogger("lmd_bot.shapes").setLevel(logging.INFO)
    trainer = Trainer(args.out, config, torch.device(args.device))
    if args.init is not None:
        if trainer.checkpoint_path.exists():
            _say(f"{args.out} has a checkpoint: resuming it (--init starts new runs only)")
        else:
            from lmd_bot.shapes.export import start_from_export

            start_from_export(trainer, args.init)
    with _stop_on_signals(trainer.request_stop):
        trainer.run(progress=not args.no_progress)
    for note in trainer.state.notes:
        _say(note)
    if trainer.stopped_early:
        _say(
            f"stopped at {trainer.state.phase} step {trainer.state.step}, checkpoint saved in {args.out}; "
            "run the same command to resume"
        )
        return 130
    return 0


@contextlib.contextmanager
def _stop_on_signals(request_stop):
    """The first Ctrl-C (or SIGTERM) asks for a stop at the next step boundary; a second one
    quits at once, losing the steps since the last checkpoint."""

    def first(signum, frame):
        _say("stopping after this step to save a checkpoint (Ctrl-C again to quit without saving)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)
        request_stop()

    previous = {sig: signal.signal(sig, first) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_export(args: argparse.Namespace) -> int:
    from lmd_bot.errors import LmdError
    from lmd_bot.shapes.export import export_checkpoint

    if not args.checkpoint.is_file():
        raise LmdError(f"no checkpoint at {args.checkpoint}: train first (lmd-bot shapes train)")
    try:
        facts = export_checkpoint(args.checkpoint, args.out, command=" ".join(sys.argv), ema=not args.live)
    except ValueError as exc:
        raise LmdError(str(exc)) from None
    _say(
        f"wrote {args.out}/sd and {args.out}/gligen from joint step {facts['joint_steps_done']}, "
        f"adapter step {facts['adapter_steps_done']} "
        f"(seed {facts['seed']}); losses {facts['last_losses']}"
    )
    return 0


def run_probe(args: argparse.Namespace) -> int:
    import torch

    from lmd_bot.config import load_settings
    from lmd_bot.diffusion.loading import load_components
    from lmd_bot.shapes.assets import shapes_diffusion_settings
    from lmd_bot.shapes.probe import probe_attention, probe_gligen, probe_position

    torch.set_num_threads(1)
    settings = shapes_diffusion_settings(load_settings().diffusion, args.weights)
    c = load_components(settings.model_copy(update={"device": "cpu", "dtype": "float32"}))
    rows = probe_attention(c.unet, c.vae, c.text_encoder, c.tokenizer)
    print("layer\tcells\tin-mask share / area share\tphrase mass in mask\tpadding mass in mask")  # noqa: T201
    for row in rows:
        print(  # noqa: T201
            f"{row.layer}\t{row.side}x{row.side}\t{row.share_ratio:.2f}\t"
            f"{row.phrase_mass_in_mask:.3f}\t{row.padding_mass_in_mask:.3f}"
        )
    if c.gligen_unet is not None:
        g = probe_gligen(c.gligen_unet, c.vae, c.text_encoder, c.tokenizer)
        print(  # noqa: T201
            f"GLIGEN: denoising error without boxes / with them {g.gain:.3f} (1.0: the adapters ignore "
            f"the boxes), fuser gates |tanh a| {g.gate:.3f}"
        )
        print("fuser\tcells\tposition R² (x, y mean)\tinterior")  # noqa: T201
        for row in probe_position(c.gligen_unet, c.vae, c.text_encoder, c.tokenizer):
            print(f"{row.layer}\t{row.side}x{row.side}\t{row.r2:.2f}\t{row.r2_interior:.2f}")  # noqa: T201
    return 0


def run_score(args: argparse.Namespace) -> int:
    import json
    import tempfile
    import time
    from dataclasses import asdict

    import torch

    from lmd_bot.config import DiffusionSettings
    from lmd_bot.diffusion.renderer import build_renderer
    from lmd_bot.errors import LmdError
    from lmd_bot.rendering import RenderMode
    from lmd_bot.shapes.assets import WEIGHTS_DIR, shapes_diffusion_settings
    from lmd_bot.shapes.export import export_checkpoint
    from lmd_bot.shapes.scorecard import score

    try:
        modes = [RenderMode(m.strip()) for m in args.eval_modes.split(",") if m.strip()]
    except ValueError:
        raise LmdError(f"--eval-modes {args.eval_modes!r}: choose from sd, lmd, lmd+, fast") from None
    if args.eval_per_task < 1 or args.eval_steps < 1:
        raise LmdError("--eval-per-task and --eval-steps must be at least 1")
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmd-shapes-score-") as tmp:
        weights = args.weights or WEIGHTS_DIR
        source = f"weights {weights}"
        if args.checkpoint is not None:
            if not args.checkpoint.is_file():
                raise LmdError(f"no checkpoint at {args.checkpoint}")
            weights = Path(tmp) / "weights"
            try:
                facts = export_checkpoint(args.checkpoint, weights, ema=not args.live)
            except ValueError as exc:
                raise LmdError(str(exc)) from None
            source = (
                f"checkpoint {args.checkpoint} (joint step {facts['joint_steps_done']}, "
                f"adapter step {facts['adapter_steps_done']}, "
                f"{facts['weights']} weights)"
            )
        settings = shapes_diffusion_settings(
            DiffusionSettings(device="cpu", dtype="float32", object_cache_mb=64), weights
        )
        renderer = build_renderer(settings)
        card = score(
            renderer,
            benchmark_modes=modes,
            per_task=args.eval_per_task,
            benchmark_steps=args.eval_steps,
            benchmark_dir=args.out or Path(tmp) / "eval",
            on_stage=lambda text: _say(f"[{time.perf_counter() - started:5.0f} s] {text}"),
        )
    print(f"lmd-bot shapes score: {source}")  # noqa: T201 - the command's output is its scorecard
    for line in card.lines():
        print(line)  # noqa: T201
    print(f"({time.perf_counter() - started:.0f} s)")  # noqa: T201
    if args.json is not None:
        figures = asdict(card)
        figures["modes"] = {m.value: v for m, v in figures["modes"].items()}
        figures["benchmark"] = {m.value: v for m, v in figures["benchmark"].items()}
        gligen_gain = card.gligen.gain if card.gligen is not None else None
        figures.update(
            source=source, colour_margin=card.colour_margin, gligen_gain=gligen_gain, failures=card.failures()
        )
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0
