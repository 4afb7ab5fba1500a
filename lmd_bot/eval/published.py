"""The published LMD-benchmark numbers we compare with (docs/method.md, "Published numbers").

The LMD authors' reference runs: 100 prompts per task, one image per prompt, OWL-ViT B/32 with
score 0.15 and class-aware NMS 0.15 for images. "average" is their "Avg" column, the mean of the
four tasks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PublishedRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    negation: float
    numeracy: float
    attribution: float
    spatial: float
    average: float

    def value(self, key: str) -> float | None:
        return getattr(self, key, None)


def _row(label: str, neg: float, num: float, attr: float, spatial: float, avg: float) -> PublishedRow:
    return PublishedRow(
        label=label, negation=neg, numeracy=num, attribution=attr, spatial=spatial, average=avg
    )


# Stage 1: layout accuracy of the LLM with LMD's template v0.1.
PUBLISHED_LAYOUTS = (
    _row("GPT-3.5 (published)", 100, 97, 100, 99, 99.0),
    _row("GPT-4 (published)", 100, 100, 100, 100, 100.0),
)

# Stage 1 + 2: image accuracy. SD v1.5 draws from the prompt alone; the others use LMD layouts.
PUBLISHED_IMAGES = (
    _row("SD v1.5 (published)", 28, 39, 52, 28, 36.8),
    _row("LMD, GPT-3.5 (published)", 100, 62, 65, 79, 76.5),
    _row("LMD+, GPT-3.5 (published)", 100, 86, 69, 67, 80.5),
    _row("LMD+, GPT-4 (published)", 100, 84, 79, 82, 86.3),
)
