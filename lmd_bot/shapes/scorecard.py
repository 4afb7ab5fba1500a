"""A scorecard for a set of shapes weights: the figures the committed-model tests assert, and more.

``lmd-bot shapes score`` prints it for the committed weights or a training checkpoint (exported to
a temporary folder first), so that the checkpoint to commit can be chosen by its figures, and
``tests/shapes/test_committed_models.py`` asserts the committed weights' figures against
:data:`TEST_BOUNDS`, from the same code:

- **attention**: per layer LMD reads, the in-mask attention share over the mask's area share, and
  the phrase's versus the padding tokens' attention inside the objects (:mod:`.probe`, at one
  timestep on twelve held-out scenes);
- **GLIGEN**: the gated UNet's denoising error without boxes over with them (1.0: the adapters
  ignore the boxes) and how open the fusers' gates are (:func:`.probe.probe_gligen`);
- **fixed layouts** (:data:`CASES`: four spatial, four counting): per mode, the share of each box's
  pixels nearest its object's colour, the objects the detector finds in their box (IoU >= 0.5,
  right colour and shape), and the benchmark checks passed;
- **move round**: ``lmd+`` renders a layout, then the same with one box moved; the mean absolute
  pixel difference inside the unmoved object's box, and over the whole picture; and where the
  moved object's colour is: its share of the new box's pixels after the move, against the old
  box's after and the new box's before;
- optionally a small subset of ``lmd-bot eval shapes``: accuracy per task and mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

import numpy as np

from lmd_bot.eval.predicates import check
from lmd_bot.eval.prompts import BenchmarkPrompt, Facts, Task
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import Renderer, RenderMode, RenderRequest
from lmd_bot.shapes.detector import ShapesDetector, colour_share, detect
from lmd_bot.shapes.probe import PROBE_SEEDS, GligenProbe, probe_gligen
from lmd_bot.shapes.world import Colour, Shape

STEPS = 10  # denoising steps of the fixed layouts and the move round
SEED = 0
PROBE_TIMESTEPS = (300,)
PROBE_SCENES = 12
MOVE_SEED = 7


@dataclass(frozen=True)
class Bounds:
    """What the committed weights must achieve (the tests assert these; docs/shapes.md has the
    measured figures). Raise them after committing better weights."""

    min_attention_ratio: float  # in-mask attention share / mask area share, every layer LMD reads
    min_colour_margin: float  # lmd+ minus sd: mean share of each box's pixels in its object's colour
    max_unmoved_mad: float  # mean absolute pixel difference (0..255) in the unmoved object's box
    max_unmoved_share: float  # ... relative to the whole picture's
    min_moved_share: float  # the moved object's colour: share of its new box's pixels after the move
    min_moved_gain: float  # ... over its share of the old box after, and of the new box before


TEST_BOUNDS = Bounds(
    min_attention_ratio=4.5,
    min_colour_margin=0.08,
    max_unmoved_mad=8.0,
    max_unmoved_share=0.6,
    min_moved_share=0.3,
    min_moved_gain=3.0,
)

_L, _R, _T, _B = [6, 22, 20, 20], [38, 22, 20, 20], [22, 6, 20, 20], [22, 38, 20, 20]
_ROW3 = ([4, 24, 16, 16], [24, 24, 16, 16], [44, 24, 16, 16])
_ROW2 = ([8, 24, 16, 16], [40, 24, 16, 16])
# (prompt for sd, background, objects (caption, box), facts for the benchmark's check)
CASES = [
    (
        "a white wall with a red circle on the left and a blue square on the right",
        "a white wall",
        [("a red circle", _L), ("a blue square", _R)],
        ("spatial", ("a red circle", "a blue square"), ("left", "right")),
    ),
    (
        "a gray wall with a yellow triangle on the top and a green circle on the bottom",
        "a gray wall",
        [("a yellow triangle", _T), ("a green circle", _B)],
        ("spatial", ("a yellow triangle", "a green circle"), ("top", "bottom")),
    ),
    (
        "a striped wall with a purple square on the right and an orange diamond on the left",
        "a striped wall",
        [("a purple square", _R), ("an orange diamond", _L)],
        ("spatial", ("a purple square", "an orange diamond"), ("right", "left")),
    ),
    (
        "a snowy field with a blue circle on the bottom and a red square on the top",
        "a snowy field",
        [("a blue circle", _B), ("a red square", _T)],
        ("spatial", ("a blue circle", "a red square"), ("bottom", "top")),
    ),
    (
        "a white wall with three red circles",
        "a white wall",
        [("a red circle", b) for b in _ROW3],
        ("count", "circle", 3),
    ),
    (
        "a gray wall with two blue squares",
        "a gray wall",
        [("a blue square", b) for b in _ROW2],
        ("count", "square", 2),
    ),
    (
        "a night sky with three yellow circles",
        "a night sky",
        [("a yellow circle", b) for b in _ROW3],
        ("count", "circle", 3),
    ),
    (
        "a checkered floor with two green triangles",
        "a checkered floor",
        [("a green triangle", b) for b in _ROW2],
        ("count", "triangle", 2),
    ),
]


def layout_of(background: str, objects) -> SceneLayout:
    return SceneLayout.model_validate(
        {
            "width": 64,
            "height": 64,
            "background": background,
            "objects": [{"id": i, "caption": c, "box": b} for i, (c, b) in enumerate(objects, start=1)],
        }
    )


def benchmark_prompt(index: int, prompt: str, facts) -> BenchmarkPrompt:
    if facts[0] == "spatial":
        return BenchmarkPrompt(
            index=index, task=Task.SPATIAL, prompt=prompt, facts=Facts(phrases=facts[1], locations=facts[2])
        )
    _, shape, count = facts
    return BenchmarkPrompt(
        index=index,
        task=Task.NUMERACY,
        prompt=prompt,
        facts=Facts(object=shape, count=count, phrases=(f"a {shape}",)),
    )


def in_its_box(image, layout: SceneLayout) -> list[bool]:
    """Per object: a detection of its colour and shape with box IoU >= 0.5 against its box."""
    found = detect(np.asarray(image))
    placed = []
    for obj in layout.objects:
        *_, colour, shape = obj.caption.split()
        box = (obj.box.x, obj.box.y, obj.box.x1, obj.box.y1)
        placed.append(
            any(
                d.colour is Colour(colour) and d.shape is Shape(shape) and d.box_iou(box) >= 0.5
                for d in found
            )
        )
    return placed


def colour_in_box(image, layout: SceneLayout) -> list[float]:
    """Per object: the share of its box's pixels nearest its colour."""
    pixels = np.asarray(image)
    return [
        colour_share(pixels, (o.box.x, o.box.y, o.box.x1, o.box.y1), Colour(o.caption.split()[-2]))
        for o in layout.objects
    ]


@dataclass(frozen=True)
class CaseResult:
    image: object  # PIL image
    placed: list[bool]
    colour: list[float]
    passed: bool


def render_cases(renderer: Renderer, mode: RenderMode, steps: int = STEPS) -> list[CaseResult]:
    out = []
    for index, (prompt, background, objects, facts) in enumerate(CASES):
        layout = layout_of(background, objects)
        request = RenderRequest(layout=layout, prompt=prompt, mode=mode, seed=SEED + index, steps=steps)
        image = renderer.render(request).image
        item = benchmark_prompt(index, prompt, facts)
        verdict = check(item, ShapesDetector().detect(image, item.detector_queries()))
        out.append(CaseResult(image, in_its_box(image, layout), colour_in_box(image, layout), verdict.passed))
    return out


@dataclass(frozen=True)
class MoveFigures:
    """A move-only round: what stayed where it was, and whether the moved object went with its box."""

    unmoved_mad: float  # mean absolute pixel difference (0..255) in the unmoved object's box
    whole_mad: float  # ... over the whole picture
    moved_in_new: float  # the moved object's colour: share of its new box's pixels after the move
    moved_in_old: float  # ... of its old box's pixels after the move
    moved_in_new_before: float  # ... of its new box's pixels before the move

    def failures(self, bounds: Bounds) -> list[str]:
        out = []
        if self.unmoved_mad > bounds.max_unmoved_mad:
            out.append(f"unmoved-box MAD {self.unmoved_mad:.1f} > {bounds.max_unmoved_mad}")
        if self.unmoved_mad >= bounds.max_unmoved_share * self.whole_mad:
            out.append(
                f"unmoved-box MAD {self.unmoved_mad:.1f} >= {bounds.max_unmoved_share} × picture's "
                f"{self.whole_mad:.1f}"
            )
        moved = f"moved object's colour in its new box {self.moved_in_new:.2f}"
        if self.moved_in_new < bounds.min_moved_share:
            out.append(f"{moved} < {bounds.min_moved_share}")
        if self.moved_in_new < bounds.min_moved_gain * max(self.moved_in_old, self.moved_in_new_before):
            out.append(
                f"{moved} < {bounds.min_moved_gain} × max(old box's {self.moved_in_old:.2f}, "
                f"new box's before the move {self.moved_in_new_before:.2f})"
            )
        return out


MOVED_BOX = [38, 40, 20, 20]  # the first case's second object, moved down 18 px (one 16 px quantum)


def move_round(renderer: Renderer, steps: int = STEPS) -> MoveFigures:
    """``lmd+``: the first case's layout, then the same with its second object moved down to
    :data:`MOVED_BOX`, a follow-up round through the renderer's per-object cache."""
    background, objects = CASES[0][1], CASES[0][2]
    (_, kept_box), (caption, old_box) = objects
    first = layout_of(background, objects)
    moved = layout_of(background, [objects[0], (caption, MOVED_BOX)])
    before, after = (
        np.asarray(
            renderer.render(
                RenderRequest(layout=lay, mode=RenderMode.LMD_PLUS, seed=MOVE_SEED, steps=steps)
            ).image
        )
        for lay in (first, moved)
    )
    change = np.abs(before.astype(float) - after.astype(float))
    x, y, w, h = kept_box

    def moved_colour(image: np.ndarray, box: list[int]) -> float:
        bx, by, bw, bh = box
        return colour_share(image, (bx, by, bx + bw, by + bh), Colour(caption.split()[-2]))

    return MoveFigures(
        unmoved_mad=float(change[y : y + h, x : x + w].mean()),
        whole_mad=float(change.mean()),
        moved_in_new=moved_colour(after, MOVED_BOX),
        moved_in_old=moved_colour(after, old_box),
        moved_in_new_before=moved_colour(before, MOVED_BOX),
    )


@dataclass(frozen=True)
class ModeFigures:
    colour_in_box: float  # mean over objects
    placed: int  # objects found in their box
    objects: int
    checks_passed: int  # of len(CASES)


@dataclass(frozen=True)
class Scorecard:
    attention: dict[str, tuple[int, float, float, float]]  # layer -> side, ratio, phrase, padding
    modes: dict[RenderMode, ModeFigures]
    move: MoveFigures
    benchmark: dict[RenderMode, dict[str, float | None]] = field(default_factory=dict)
    benchmark_prompts: int = 0  # per task
    gligen: GligenProbe | None = None  # None: weights without a GLIGEN UNet

    @property
    def colour_margin(self) -> float:
        return self.modes[RenderMode.LMD_PLUS].colour_in_box - self.modes[RenderMode.SD].colour_in_box

    def failures(self, bounds: Bounds = TEST_BOUNDS) -> list[str]:
        """The bounds these figures miss (empty: the committed-model tests would pass)."""
        out = []
        for layer, (_, ratio, phrase, padding) in self.attention.items():
            if ratio < bounds.min_attention_ratio:
                out.append(f"{layer}: attention ratio {ratio:.2f} < {bounds.min_attention_ratio}")
            if phrase <= padding:
                out.append(f"{layer}: phrase mass {phrase:.3f} <= padding mass {padding:.3f}")
        if self.colour_margin < bounds.min_colour_margin:
            out.append(f"colour margin {self.colour_margin:+.3f} < {bounds.min_colour_margin}")
        return out + self.move.failures(bounds)

    def lines(self, bounds: Bounds = TEST_BOUNDS) -> list[str]:
        out = ["attention at the layers LMD reads (in-mask / area share; phrase / padding mass in mask):"]
        for layer, (side, ratio, phrase, padding) in self.attention.items():
            out.append(f"  {layer:<52} {side}x{side}  {ratio:5.2f}  {phrase:.3f} / {padding:.3f}")
        if self.gligen is not None:
            g = self.gligen
            out.append(
                f"GLIGEN: denoising error without boxes / with them {g.gain:.3f} (1.0: the boxes change "
                f"nothing; {g.error_without:.4f} / {g.error_with_boxes:.4f}), "
                f"fuser gates |tanh a| {g.gate:.3f}"
            )
        out.append(f"fixed layouts ({len(CASES)} layouts, {STEPS} steps):")
        for mode, m in self.modes.items():
            out.append(
                f"  {mode.value:<5} colour in box {100 * m.colour_in_box:5.1f}%  objects found in their box "
                f"{m.placed}/{m.objects}  checks passed {m.checks_passed}/{len(CASES)}"
            )
        out.append(f"  lmd+ colour margin over sd: {100 * self.colour_margin:+.1f} points")
        m = self.move
        out.append(
            f"move round (lmd+): unmoved box MAD {m.unmoved_mad:.1f}, whole picture {m.whole_mad:.1f} "
            f"(ratio {m.unmoved_mad / max(m.whole_mad, 1e-9):.2f}); moved object's colour in its new box "
            f"{100 * m.moved_in_new:.0f}% (before the move {100 * m.moved_in_new_before:.0f}%), "
            f"old box {100 * m.moved_in_old:.0f}%"
        )
        if self.benchmark:
            out.append(f"eval shapes subset ({self.benchmark_prompts} prompts per task):")
            for mode, acc in self.benchmark.items():
                cells = ", ".join(f"{k} {'–' if v is None else f'{v:.0f}'}" for k, v in acc.items())
                out.append(f"  {mode.value:<5} {cells}")
        failures = self.failures(bounds)
        verdict = "pass" if not failures else "FAIL: " + "; ".join(failures)
        out.append(f"committed-model test bounds: {verdict}")
        return out


def probe(renderer) -> dict[str, tuple[int, float, float, float]]:
    from lmd_bot.diffusion.attention import GUIDANCE_KEYS, SAM_KEY
    from lmd_bot.shapes.probe import probe_attention

    c = renderer.pipeline.c
    rows = probe_attention(
        c.unet,
        c.vae,
        c.text_encoder,
        c.tokenizer,
        timesteps=PROBE_TIMESTEPS,
        seeds=PROBE_SEEDS[:PROBE_SCENES],
    )
    by_layer = {row.layer: row for row in rows}
    return {
        layer: (
            by_layer[layer].side,
            by_layer[layer].share_ratio,
            by_layer[layer].phrase_mass_in_mask,
            by_layer[layer].padding_mass_in_mask,
        )
        for layer in (*GUIDANCE_KEYS, SAM_KEY)
    }


def mode_figures(results: Sequence[CaseResult]) -> ModeFigures:
    return ModeFigures(
        colour_in_box=fmean(c for r in results for c in r.colour),
        placed=sum(p for r in results for p in r.placed),
        objects=sum(len(r.placed) for r in results),
        checks_passed=sum(r.passed for r in results),
    )


def score(
    renderer,
    *,
    benchmark_modes: Sequence[RenderMode] = (),
    per_task: int = 2,
    benchmark_steps: int = STEPS,
    benchmark_dir: Path | None = None,
    on_stage=None,
) -> Scorecard:
    """The scorecard of ``renderer``'s weights (a :class:`DiffusionRenderer` on shapes models);
    ``benchmark_modes``: also run ``per_task`` prompts per task of the benchmark in these modes,
    its images and report in ``benchmark_dir``."""

    def stage(text: str) -> None:
        if on_stage is not None:
            on_stage(text)

    stage("attention probe")
    attention = probe(renderer)
    c = renderer.pipeline.c
    gligen = None
    if c.gligen_unet is not None:
        stage("GLIGEN probe")
        gligen = probe_gligen(
            c.gligen_unet, c.vae, c.text_encoder, c.tokenizer, seeds=PROBE_SEEDS[:PROBE_SCENES]
        )
    modes = {}
    for mode in (RenderMode.LMD_PLUS, RenderMode.SD):
        stage(f"fixed layouts, {mode.value}")
        modes[mode] = mode_figures(render_cases(renderer, mode))
    stage("move round")
    move = move_round(renderer)
    benchmark: dict[RenderMode, dict[str, float | None]] = {}
    if benchmark_modes:
        from lmd_bot.shapes.benchmark import shapes_prompts, subset
        from lmd_bot.shapes.evaluate import run_benchmark

        if benchmark_dir is None:
            raise ValueError("a benchmark needs a folder for its images")
        stage(f"eval shapes subset: {per_task} per task, {', '.join(m.value for m in benchmark_modes)}")
        report = run_benchmark(
            subset(shapes_prompts(), per_task),
            benchmark_modes,
            renderer,
            benchmark_dir,
            steps=benchmark_steps,
            guidance_scale=7.5,
            renderer_facts={"scorecard": "lmd-bot shapes score"},
            on_image=lambda mode, prompt, status: stage(f"eval {mode.value} #{prompt.index}: {status}"),
        )
        report.write(benchmark_dir)
        benchmark = {RenderMode(run.name): run.accuracies() for run in report.runs}
    return Scorecard(attention, modes, move, benchmark, per_task if benchmark_modes else 0, gligen)
