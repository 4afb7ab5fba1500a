"""Open-vocabulary detectors that score the benchmark's images: OWL-ViT and OWLv2 (transformers).

The scoring follows the reference (docs/method.md, "Image scoring"): the prompt's queries ("a photo of
a blue dog", ...), each predicted box labelled with its best query and scored with that query's
sigmoid logit, boxes under the score threshold dropped (0.15), then class-aware NMS (0.15).
Boxes come back as ``[x, y, w, h]`` image pixels, named by their query.

OWL-ViT (``google/owlvit-base-patch32``) is what the published numbers use. OWLv2
(``google/owlv2-base-patch16-ensemble``) is a stronger detector that later work scores with;
it pads images to a square before resizing, so its boxes are relative to the padded square.

Models load with ``from_pretrained`` from a hub id or a local folder; torch and transformers are
imported here only, when a detector is built.
"""

from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, Literal

from lmd_bot.errors import ConfigError
from lmd_bot.eval.nms import class_aware_nms
from lmd_bot.eval.predicates import NamedBox

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DetectorKind = Literal["owlvit", "owlv2"]
DEFAULT_MODELS: dict[DetectorKind, str] = {
    "owlvit": "google/owlvit-base-patch32",
    "owlv2": "google/owlv2-base-patch16-ensemble",
}
DISPLAY_NAMES: dict[DetectorKind, str] = {"owlvit": "OWL-ViT", "owlv2": "OWLv2"}
SCORE_THRESHOLD = 0.15
NMS_THRESHOLD = 0.15


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Detector:
    """A loaded detector with the benchmark's thresholds."""

    def __init__(
        self,
        kind: DetectorKind,
        model: Any,
        processor: Any,
        *,
        model_id: str,
        device: str = "cpu",
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
    ) -> None:
        self.kind = kind
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    @property
    def name(self) -> str:
        return DISPLAY_NAMES[self.kind]

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "nms": "class-aware",
        }

    def detect(self, image: Image.Image, queries: list[str]) -> list[NamedBox]:
        import torch

        image = image.convert("RGB")
        width, height = image.size
        inputs = self.processor(text=[queries], images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        logits = outputs.logits[0].float()  # (boxes, queries)
        best, labels = logits.max(dim=-1)
        scores = torch.sigmoid(best).tolist()
        labels = labels.tolist()
        # Centre-size, normalized to the model's input: the image itself for OWL-ViT, the image
        # padded to a square (bottom and right) for OWLv2.
        cxcywh = outputs.pred_boxes[0].float().tolist()
        sx, sy = (max(width, height),) * 2 if self.kind == "owlv2" else (width, height)

        keep = [i for i, s in enumerate(scores) if s >= self.score_threshold]
        xyxy = [
            (
                (cxcywh[i][0] - cxcywh[i][2] / 2) * sx / width,
                (cxcywh[i][1] - cxcywh[i][3] / 2) * sy / height,
                (cxcywh[i][0] + cxcywh[i][2] / 2) * sx / width,
                (cxcywh[i][1] + cxcywh[i][3] / 2) * sy / height,
            )
            for i in keep
        ]
        kept_scores = [scores[i] for i in keep]
        kept_labels = [labels[i] for i in keep]
        out = []
        for j in class_aware_nms(xyxy, kept_scores, kept_labels, self.nms_threshold):
            x0, y0, x1, y1 = xyxy[j]
            box = (x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height)
            out.append(NamedBox(name=queries[kept_labels[j]], box=box, score=kept_scores[j]))
        return out


def load_detector(
    kind: DetectorKind,
    model_id: str | None = None,
    *,
    device: str = "auto",
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
) -> Detector:
    """Load OWL-ViT or OWLv2 from a hub id or a local folder (raises ConfigError if it can't)."""
    from transformers import (
        Owlv2ForObjectDetection,
        Owlv2Processor,
        OwlViTForObjectDetection,
        OwlViTProcessor,
    )

    model_id = model_id or DEFAULT_MODELS[kind]
    if kind == "owlv2" and not (find_spec("scipy") or find_spec("torchvision")):
        msg = "The OWLv2 detector needs scipy (or torchvision): pip install 'lmd-bot[eval]'."
        raise ConfigError(msg, user_message=msg)
    model_cls, processor_cls = (
        (OwlViTForObjectDetection, OwlViTProcessor)
        if kind == "owlvit"
        else (Owlv2ForObjectDetection, Owlv2Processor)
    )
    device = pick_device(device)
    try:
        processor = processor_cls.from_pretrained(model_id)
        model = model_cls.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"could not load {DISPLAY_NAMES[kind]} from {model_id!r}: {exc}",
            user_message=(
                f"Could not load the {DISPLAY_NAMES[kind]} detector {model_id!r}. Download it once with "
                f"`hf download {model_id}` (or pass a local folder), then rerun."
            ),
        ) from None
    model.to(device).eval()
    log.info("loaded %s from %s on %s", DISPLAY_NAMES[kind], model_id, device)
    return Detector(
        kind,
        model,
        processor,
        model_id=model_id,
        device=device,
        score_threshold=score_threshold,
        nms_threshold=nms_threshold,
    )
