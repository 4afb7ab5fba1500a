"""``lmd-bot render``: draw a layout file with Stable Diffusion; write the image and its overlay."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from lmd_bot.rendering import RenderMode

MODES = tuple(mode.value for mode in RenderMode)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render a layout file to an image (and its box overlay)",
        description=(
            "Render a layout (JSON or LMD text) with the configured Stable Diffusion model. Writes "
            "the image and, beside it, the image with the layout's boxes drawn over it."
        ),
    )
    p.add_argument("--layout", type=Path, required=True, help="the layout file (JSON or LMD text)")
    p.add_argument("--out", type=Path, required=True, help="where to write the image (PNG)")
    p.add_argument("--overlay", type=Path, help="where to write the overlay (default: OUT with .overlay.png)")
    p.add_argument("--mode", choices=MODES, help="rendering mode (default: diffusion.mode)")
    p.add_argument("--prompt", default="", help="the original prompt (what 'sd' mode draws)")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("--steps", type=int, help="denoising steps (default: diffusion.steps)")
    p.add_argument("--guidance-scale", type=float, help="CFG scale (default: diffusion.guidance_scale)")
    p.add_argument("--size", type=int, help="longer image side in pixels, a multiple of 64")
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="render 1 to 4 seeds (SEED and seeds derived from it) in one batch: OUT is their numbered "
        "grid, each candidate is also written as OUT-1.png, OUT-2.png, … (default 1)",
    )
    models = p.add_mutually_exclusive_group()
    models.add_argument(
        "--tiny",
        action="store_true",
        help="use tiny random-weight models (no download; the picture is noise: for trying the plumbing)",
    )
    models.add_argument(
        "--shapes",
        action="store_true",
        help="use the shapes-world models shipped with lmd-bot (64 px, no download, no GPU; docs/shapes.md)",
    )
    p.set_defaults(func=run)


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    """What the command writes, by name: the image (a grid with candidates), each candidate, the
    overlay. Checked before the models load, so a typo costs no render."""
    from lmd_bot.commands import OutputError, check_new_file

    files = {"image": args.out}
    if args.candidates > 1:
        files |= {
            f"candidate {k}": args.out.with_name(f"{args.out.stem}-{k}.png")
            for k in range(1, args.candidates + 1)
        }
    files["overlay"] = args.overlay or args.out.with_suffix(".overlay.png")
    seen: dict[Path, str] = {}
    for what, path in files.items():
        check_new_file(path, what)
        if (other := seen.setdefault(path.resolve(), what)) != what:
            raise OutputError(f"the {other} and the {what} would both be written to {path}")
    return files


def _write_atomically(path: Path, data: bytes, what: str) -> None:
    """Write via a temporary file in the same folder, so a failure never leaves half a PNG."""
    from lmd_bot.commands import OutputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).chmod(0o644)  # mkstemp creates 0600; an image is meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, a folder made read-only meanwhile
            raise OutputError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None
        raise


def run(args: argparse.Namespace) -> int:
    import io

    from pydantic import ValidationError

    from lmd_bot.config import load_settings
    from lmd_bot.diffusion.renderer import build_renderer
    from lmd_bot.errors import LmdError
    from lmd_bot.layout.io import load_layout_file
    from lmd_bot.overlay import draw_overlay
    from lmd_bot.rendering import Refine, RenderMode, RenderProgress, RenderRequest

    settings = load_settings()
    diffusion = settings.diffusion
    if args.shapes:
        from lmd_bot.shapes.assets import shapes_diffusion_settings

        diffusion = shapes_diffusion_settings(diffusion)
    # Refinement on request ("button") means nothing here: "on" refines, anything else loads no refiner.
    refine = diffusion.refine is Refine.ON
    updates = {"refine": Refine.ON if refine else Refine.OFF}
    if args.size is not None:
        updates["size"] = args.size
    try:
        diffusion = diffusion.model_validate({**diffusion.model_dump(), **updates})
        loaded = load_layout_file(args.layout, limits=settings.layout.limits())
        request = RenderRequest(
            layout=loaded.layout,
            prompt=args.prompt,
            mode=RenderMode(args.mode or diffusion.mode),
            seed=args.seed,
            steps=args.steps if args.steps is not None else diffusion.steps,
            guidance_scale=args.guidance_scale
            if args.guidance_scale is not None
            else diffusion.guidance_scale,
            refine=refine,
            candidates=args.candidates,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise LmdError(f"invalid option {where}: {err['msg']}") from None
    files = _outputs(args)
    for note in loaded.notes:
        print(f"note: {note}", file=sys.stderr)  # noqa: T201

    renderer = build_renderer(diffusion, tiny=args.tiny, check=not args.tiny)
    last_stage = ""

    def progress(p: RenderProgress) -> None:
        nonlocal last_stage
        if p.stage != last_stage or p.step == p.total or p.step % 10 == 0:
            print(f"{p.stage}: step {p.step}/{p.total}", file=sys.stderr)  # noqa: T201
            last_stage = p.stage

    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    output = renderer.render(request, progress=progress)
    overlay_path = files["overlay"]
    if output.candidates:
        from lmd_bot.grid import candidate_overlays, grid_overlay_png, grid_png

        pngs = [png(image) for image in output.candidates]
        for number, (data, seed) in enumerate(zip(pngs, request.seeds, strict=True), start=1):
            path = files[f"candidate {number}"]
            _write_atomically(path, data, f"candidate {number}")
            print(f"candidate {number}: seed {seed}, {path}", file=sys.stderr)  # noqa: T201
        _write_atomically(args.out, grid_png(pngs), "image")
        overlays = candidate_overlays(request.layout, pngs)
        _write_atomically(overlay_path, grid_overlay_png(request.layout, overlays), "overlay")
    else:
        _write_atomically(args.out, png(output.image), "image")
        missing = output.check.missing_ids if output.check else ()
        overlay = draw_overlay(request.layout, output.image, missing=missing)
        _write_atomically(overlay_path, overlay, "overlay")
    if output.check is not None:
        print(output.check.line(), file=sys.stderr)  # noqa: T201
    figures = ", ".join(f"{k} {v:g}" for k, v in output.stats.items())
    print(f"wrote {args.out} and {overlay_path} in {output.seconds:.1f} s ({figures})", file=sys.stderr)  # noqa: T201
    return 0
