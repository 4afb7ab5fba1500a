"""Image scoring: NMS, the detectors on tiny random weights (plumbing), and `eval images`."""

import json

import pytest
import torch
from PIL import Image

from lmd_bot.cli import main
from lmd_bot.errors import ConfigError
from lmd_bot.eval.detector import load_detector
from lmd_bot.eval.generate import GenerateSettings, generate_images
from lmd_bot.eval.nms import class_aware_nms, iou
from lmd_bot.eval.prompts import lmd_benchmark_prompts
from lmd_bot.layout import SceneLayout
from lmd_bot.rendering import RenderMode
from tests.eval.test_generate import BoxRenderer

PROMPTS = lmd_benchmark_prompts()


def test_iou_on_normalized_boxes():
    assert iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == 1.0
    assert iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0
    assert iou((0, 0, 0.2, 0.1), (0.1, 0, 0.3, 0.1)) == pytest.approx(1 / 3)


def test_class_aware_nms_suppresses_within_a_label_only():
    boxes = [
        (0.0, 0.0, 0.4, 0.4),  # label 1, 0.5
        (0.0, 0.0, 0.4, 0.4),  # label 0, 0.3: same place, other label: kept
        (0.02, 0.0, 0.42, 0.4),  # label 1, 0.9: overlaps the first heavily: it wins
        (0.6, 0.6, 0.9, 0.9),  # label 1, 0.2: elsewhere: kept
        (0.3, 0.3, 0.7, 0.7),  # label 0, 0.4: IoU with box 1 is 0.0625 < 0.15: kept
    ]
    scores = [0.5, 0.3, 0.9, 0.2, 0.4]
    labels = [1, 0, 1, 1, 0]
    # Label by label, best first within a label (the spatial check takes the first box).
    assert class_aware_nms(boxes, scores, labels, 0.15) == [4, 1, 2, 3]
    assert class_aware_nms([], [], [], 0.15) == []


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_detector_boxes_match_transformers_post_processing(tiny_detectors, kind):
    """With thresholds that keep everything, our boxes are transformers' own, named by query."""
    detector = load_detector(
        kind, str(tiny_detectors[kind]), device="cpu", score_threshold=0.0, nms_threshold=2.0
    )
    image = Image.new("RGB", (96, 64), (30, 120, 200))
    queries = ["a photo of a blue dog", "a photo of an orange chair"]
    found = detector.detect(image, queries)

    inputs = detector.processor(text=[queries], images=image, return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    side = max(image.size)  # OWLv2 predicts on the image padded to a square
    target = (image.height, image.width) if kind == "owlvit" else (side, side)
    ref = detector.processor.image_processor.post_process_object_detection(
        outputs, threshold=-1.0, target_sizes=[target]
    )[0]
    expected = sorted(
        (queries[label], round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3))
        for (x0, y0, x1, y1), label in zip(ref["boxes"].tolist(), ref["labels"].tolist(), strict=True)
    )
    got = sorted((b.name, *(round(v, 3) for v in b.box)) for b in found)
    assert got == expected
    assert len(found) == outputs.pred_boxes.shape[1]


def test_detector_thresholds_drop_boxes(tiny_detectors):
    detector = load_detector("owlvit", str(tiny_detectors["owlvit"]), device="cpu", score_threshold=1.01)
    assert detector.detect(Image.new("RGB", (64, 64)), ["a photo of a cat"]) == []


def test_loading_a_missing_detector_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_detector("owlvit", str(tmp_path / "nowhere"), device="cpu")
    assert "Download it once" in err.value.user_message


def test_eval_images_command_scores_a_folder_with_both_detectors(tmp_path, tiny_detectors, capsys):
    subset = [PROMPTS[i] for i in (0, 150, 250, 350)]
    settings = GenerateSettings(mode=RenderMode.SD, steps=2, guidance_scale=7.5)
    layouts = {p.index: SceneLayout() for p in subset}
    generate_images(subset, layouts, BoxRenderer(), tmp_path / "images", settings)
    # A folder with two images is not the benchmark's shape: not evaluated, and said so.
    extra = tmp_path / "images" / "5"
    extra.mkdir()
    for name in ("img_0.png", "img_1.png"):
        Image.new("RGB", (64, 64)).save(extra / name)

    code = main(
        [
            "eval",
            "images",
            "--dir",
            str(tmp_path / "images"),
            "--owlvit-model",
            str(tiny_detectors["owlvit"]),
            "--owlv2-model",
            str(tiny_detectors["owlv2"]),
            "--score-threshold",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = tmp_path / "images" / "eval"
    data = json.loads((out / "report.json").read_text())
    assert [run["name"] for run in data["runs"]] == ["OWL-ViT", "OWLv2"]
    for run in data["runs"]:
        evaluated = {i["index"] for i in run["items"] if i["passed"] is not None}
        assert evaluated == {0, 150, 250, 350}
        item5 = next(i for i in run["items"] if i["index"] == 5)
        assert "2 images" in item5["found"]
        # Plumbing: every scored prompt names its image and what the detector found.
        scored = [i for i in run["items"] if i["passed"] is not None]
        assert all(i["source"].endswith("img_0.png") and i["found"] for i in scored)
    assert data["settings"]["generation: mode"] == "sd"
    assert data["settings"]["OWL-ViT: score_threshold"] == 0.0
    md = (out / "report.md").read_text()
    assert "**OWL-ViT** (ours)" in md and "**OWLv2** (ours)" in md and "SD v1.5 (published)" in md
    assert "396 of 400 prompts were not evaluated" in md
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
