"""Checking is not scoring: 'eval images' names both detectors and flags the scorer that also
checked the images; the OWL checker runs the self-check's queries (tiny random OWL weights)."""

import json

from PIL import Image

from lmd_bot.cli import main
from lmd_bot.config import DiffusionSettings
from lmd_bot.diffusion.renderer import build_checker
from lmd_bot.eval.generate import GenerateSettings, generate_images
from lmd_bot.eval.prompts import lmd_benchmark_prompts
from lmd_bot.layout import SceneLayout
from lmd_bot.rendering import RenderMode
from tests.eval.test_generate import BoxRenderer


def test_eval_images_flags_the_detector_that_also_checked(tmp_path, tiny_detectors):
    subset = [lmd_benchmark_prompts()[i] for i in (0, 150)]
    settings = GenerateSettings(
        mode=RenderMode.SD,
        steps=2,
        guidance_scale=7.5,
        renderer={"self_check": True, "check_detector": "owlv2"},  # as 'eval generate --self-check' records
    )
    generate_images(
        subset, {p.index: SceneLayout() for p in subset}, BoxRenderer(), tmp_path / "img", settings
    )
    args = ["eval", "images", "--dir", str(tmp_path / "img"), "--device", "cpu"]
    args += ["--owlvit-model", str(tiny_detectors["owlvit"]), "--owlv2-model", str(tiny_detectors["owlv2"])]
    assert main(args) == 0
    report = json.loads((tmp_path / "img" / "eval" / "report.json").read_text())
    assert [run["name"] for run in report["runs"]] == [
        "OWL-ViT",
        "OWLv2 (checked by its own scoring detector: flattered)",
    ]
    assert report["settings"]["OWL-ViT: checking detector (self-check)"] == "owlv2"
    assert report["settings"]["OWLv2: scoring detector"] == "OWLv2"
    assert len(report["notes"]) == 1 and "used the scoring detector (OWLv2)" in report["notes"][0]


def test_eval_images_of_unchecked_images_names_no_checker(tmp_path, tiny_detectors):
    subset = [lmd_benchmark_prompts()[0]]
    settings = GenerateSettings(mode=RenderMode.SD, steps=2, guidance_scale=7.5)
    generate_images(subset, {0: SceneLayout()}, BoxRenderer(), tmp_path / "img", settings)
    args = ["eval", "images", "--dir", str(tmp_path / "img"), "--device", "cpu", "--detectors", "owlvit"]
    assert main([*args, "--owlvit-model", str(tiny_detectors["owlvit"])]) == 0
    report = json.loads((tmp_path / "img" / "eval" / "report.json").read_text())
    assert [run["name"] for run in report["runs"]] == ["OWL-ViT"] and report["notes"] == []
    assert report["settings"]["OWL-ViT: checking detector (self-check)"] == "none (no self-check)"


def test_the_owl_checker_answers_the_layouts_queries(tiny_detectors):
    settings = DiffusionSettings(
        check_detector="owlv2", check_detector_model=str(tiny_detectors["owlv2"]), device="cpu"
    )
    checker = build_checker(settings)
    assert checker is not None and checker.detector.name == "OWLv2" and checker.max_retries == 2
    layout = SceneLayout.model_validate(
        {"negative": "cats", "objects": [{"id": 1, "caption": "a blue cup", "box": [10, 10, 200, 200]}]}
    )
    result = checker.assess(layout, Image.new("RGB", (96, 96), (30, 120, 200)))
    assert result.unchecked_ids == frozenset()  # an OWL detector takes any words
    assert result.found_ids | set(result.fixable_ids) == {1}


def test_a_checker_that_cannot_load_turns_the_check_off(tmp_path):
    settings = DiffusionSettings(check_detector="owlv2", check_detector_model=str(tmp_path / "nowhere"))
    assert build_checker(settings) is None
    assert build_checker(DiffusionSettings(check_detector="none")) is None
    assert build_checker(DiffusionSettings(self_check=False, check_detector="shapes")) is None
    assert build_checker(DiffusionSettings(check_detector="shapes")).detector.name == "shapes"
