"""Rendering the benchmark into a folder: seeds, layouts, resuming, settings, failures."""

import json

import pytest
from PIL import Image, ImageDraw

from lmd_bot.errors import LmdError, OutOfMemoryError
from lmd_bot.eval.generate import GenerateSettings, benchmark_layouts, generate_images, image_path
from lmd_bot.eval.prompts import lmd_benchmark_prompts
from lmd_bot.rendering import RenderMode, RenderOutput
from tests.eval.answers import correct_answer

PROMPTS = lmd_benchmark_prompts()
SUBSET = [PROMPTS[i] for i in (0, 1, 150, 200, 300)]


class BoxRenderer:
    """A Renderer test double for plumbing: paints each layout box in a solid colour, records the
    requests, and can be told to run out of memory on given seeds."""

    def __init__(self, oom_seeds=()):
        self.requests = []
        self.oom_seeds = set(oom_seeds)

    def render(self, request, progress=None, should_cancel=None):
        self.requests.append(request)
        if request.seed in self.oom_seeds:
            raise OutOfMemoryError("CUDA out of memory")
        image = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(image)
        for obj in request.layout.objects:
            x0, y0, x1, y1 = (v * 64 for v in obj.box.to_xyxy_norm())
            draw.rectangle([x0, y0, x1, y1], fill=(200, 30, 30))
        return RenderOutput(image=image, seconds=0.01)


def settings(**kw):
    return GenerateSettings(mode=RenderMode.LMD_PLUS, steps=2, guidance_scale=7.5, **kw)


@pytest.fixture
def layouts():
    answers = {}
    for item in SUBSET:
        answers.setdefault(item.prompt, []).append(correct_answer(item))
    found, problems = benchmark_layouts(SUBSET, answers)
    assert not problems
    return found


def test_generate_renders_each_prompt_with_its_index_as_seed(tmp_path, layouts):
    renderer = BoxRenderer()
    summary = generate_images(SUBSET, layouts, renderer, tmp_path, settings())
    assert summary.rendered == [0, 1, 150, 200, 300]
    assert [r.seed for r in renderer.requests] == [0, 1, 150, 200, 300]
    assert [r.prompt for r in renderer.requests] == [p.prompt for p in SUBSET]
    assert {r.mode for r in renderer.requests} == {RenderMode.LMD_PLUS}
    assert [len(r.layout.objects) for r in renderer.requests] == [0, 0, 3, 2, 2]
    for item in SUBSET:
        assert Image.open(image_path(tmp_path, item.index)).size == (64, 64)
        record = json.loads((tmp_path / str(item.index) / "render.json").read_text())
        assert record["seed"] == item.index and record["prompt"] == item.prompt
    recorded = json.loads((tmp_path / "settings.json").read_text())
    assert recorded["mode"] == "lmd+" and recorded["steps"] == 2
    assert not list(tmp_path.rglob("*.tmp"))


def test_generate_resumes_without_rendering_again(tmp_path, layouts):
    generate_images(SUBSET, layouts, BoxRenderer(), tmp_path, settings())
    image_path(tmp_path, 200).unlink()
    renderer = BoxRenderer()
    summary = generate_images(SUBSET, layouts, renderer, tmp_path, settings())
    assert [r.seed for r in renderer.requests] == [200]
    assert summary.skipped == [0, 1, 150, 300] and summary.rendered == [200]


def test_generate_refuses_a_folder_made_with_other_settings(tmp_path, layouts):
    generate_images(SUBSET[:1], layouts, BoxRenderer(), tmp_path, settings())
    other = GenerateSettings(mode=RenderMode.LMD, steps=2, guidance_scale=7.5)
    with pytest.raises(LmdError, match=r"other settings \(mode: 'lmd\+' -> 'lmd'\)"):
        generate_images(SUBSET, layouts, BoxRenderer(), tmp_path, other)


def test_generate_goes_on_after_running_out_of_memory(tmp_path, layouts):
    renderer = BoxRenderer(oom_seeds={150})
    summary = generate_images(SUBSET, layouts, renderer, tmp_path, settings())
    assert summary.failed == {150: OutOfMemoryError.user_message}
    assert summary.rendered == [0, 1, 200, 300]
    assert not (tmp_path / "150").exists()
    # A rerun fills the gap.
    summary = generate_images(SUBSET, layouts, BoxRenderer(), tmp_path, settings())
    assert summary.rendered == [150]


def test_prompts_without_a_usable_layout_are_reported(tmp_path):
    item = PROMPTS[150]
    found, problems = benchmark_layouts([item, PROMPTS[151]], {item.prompt: ["not a layout"]})
    assert found == {}
    assert "answer 1" in problems[150]
    assert problems[151] == "no recorded answer for this prompt"
    summary = generate_images([item], found, BoxRenderer(), tmp_path, settings())
    assert summary.failed == {150: "no usable layout"}


def test_eval_generate_command_renders_the_chosen_prompts_and_resumes(tmp_path, monkeypatch, capsys):
    import lmd_bot.diffusion.renderer as renderer_module
    from lmd_bot.cli import main

    made, baselines = [], []

    def build_renderer(settings, *, tiny=False, sd_baseline=None, check=False):
        made.append(tiny)
        baselines.append(sd_baseline)
        return BoxRenderer()

    monkeypatch.setattr(renderer_module, "build_renderer", build_renderer)
    answers = {}
    for item in PROMPTS:
        answers.setdefault(item.prompt, []).append(correct_answer(item))
    # The ten "without backpacks" answers differ by background: repeat k must get answer k.
    answers[PROMPTS[0].prompt] = [
        f"[]\nBackground prompt: room {k}\nNegative prompt: backpacks" for k in range(10)
    ]
    layouts = tmp_path / "answers.json"
    layouts.write_text(json.dumps(answers))
    out = tmp_path / "images"
    args = ["eval", "generate", "--mode", "lmd", "--layouts", str(layouts), "--out", str(out)]
    args += ["--indexes", "0,7,150,398-399", "--steps", "3", "--tiny"]

    assert main(args) == 0
    assert made == [True]
    assert sorted(int(p.parent.name) for p in out.glob("*/img_0.png")) == [0, 7, 150, 398, 399]
    assert json.loads((out / "7" / "render.json").read_text())["layout"]["background"] == "room 7"
    recorded = json.loads((out / "settings.json").read_text())
    assert (recorded["mode"], recorded["steps"], recorded["renderer"]["tiny"]) == ("lmd", 3, True)
    assert recorded["layouts_file"] == str(layouts) and len(recorded["layouts_sha256"]) == 64
    assert main(args) == 0
    assert "0 rendered, 5 already there, 0 failed" in capsys.readouterr().err


def test_eval_generate_command_needs_layouts_except_for_plain_sd(tmp_path, capsys):
    from lmd_bot.cli import main

    assert main(["eval", "generate", "--mode", "lmd+", "--out", str(tmp_path / "x")]) == 2
    assert "pass --layouts FILE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["eval", "generate", "--mode", "sd", "--indexes", "390-420"])
    assert "not a list of indexes in 0-399" in capsys.readouterr().err


def test_eval_generate_sd_runs_the_reference_sd_baseline_by_default(tmp_path, monkeypatch):
    """The published SD column came from SD v1.5's own PNDM scheduler in float32: ``--mode sd``
    asks the renderer for that baseline (and records it) unless told otherwise."""
    import lmd_bot.diffusion.renderer as renderer_module
    from lmd_bot.cli import main
    from lmd_bot.rendering import SdBaseline

    built = []

    def build_renderer(settings, *, tiny=False, sd_baseline=None, check=False):
        built.append((settings.dtype, sd_baseline))
        return BoxRenderer()

    monkeypatch.setattr(renderer_module, "build_renderer", build_renderer)
    monkeypatch.setenv("LMD_DIFFUSION__DTYPE", "bfloat16")
    out = tmp_path / "sd"
    assert main(["eval", "generate", "--mode", "sd", "--indexes", "3", "--out", str(out), "--tiny"]) == 0
    assert built == [("float32", SdBaseline.REFERENCE)]
    recorded = json.loads((out / "settings.json").read_text())["renderer"]
    assert (recorded["sd_baseline"], recorded["dtype"]) == ("reference", "float32")
    args = ["eval", "generate", "--mode", "sd", "--indexes", "3", "--out", str(tmp_path / "ddim"), "--tiny"]
    assert main([*args, "--sd-baseline", "controller"]) == 0
    assert built[-1] == ("bfloat16", SdBaseline.CONTROLLER)


def test_eval_generate_refine_scores_refined_images_and_records_it(tmp_path, monkeypatch, capsys):
    """``--refine on``: every benchmark image goes through the (tiny random) SDXL refiner, at the
    refine size; the folder records it, so refined and plain images are never mixed."""
    from lmd_bot.cli import main

    for key, value in {"SIZE": "128", "REFINE_SIZE": "256", "USE_SAM": "false", "GLIGEN_MODEL": ""}.items():
        monkeypatch.setenv(f"LMD_DIFFUSION__{key}", value)
    out = tmp_path / "refined"
    args = ["eval", "generate", "--mode", "sd", "--indexes", "3", "--out", str(out), "--tiny", "--steps", "2"]
    assert main([*args, "--refine", "on"]) == 0
    assert Image.open(image_path(out, 3)).size == (256, 256)
    assert json.loads((out / "3" / "render.json").read_text())["stats"]["refine_seconds"] > 0
    assert json.loads((out / "settings.json").read_text())["renderer"]["refine"] == "on"
    assert main(args) == 2  # the configured default (off) into the refined folder: refused
    said = capsys.readouterr().err
    assert "other settings" in said and "'refine': 'on'" in said and "'refine': 'off'" in said
