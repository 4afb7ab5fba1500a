"""Class-aware non-maximum suppression, as the benchmark's image scoring applies it (section 7.2).

For each label separately, boxes are taken greedily by descending score and every remaining box
of that label whose IoU with the taken one is at least the threshold is dropped. IoU is computed
on normalized coordinates with no "+1" pixel convention. Kept boxes come out label by label (in
label order), highest score first within a label: the spatial check takes the first box of each
object, so this order is part of the method.
"""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 (normalized)


def iou(a: Box, b: Box) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def class_aware_nms(
    boxes: Sequence[Box], scores: Sequence[float], labels: Sequence[int], threshold: float
) -> list[int]:
    """Indexes of the kept boxes, label by label, best first within a label."""
    kept: list[int] = []
    for label in sorted(set(labels)):
        # Ties in score keep the input order, so the result does not depend on a sort's whims.
        order = sorted((i for i, lab in enumerate(labels) if lab == label), key=lambda i: -scores[i])
        while order:
            best, order = order[0], order[1:]
            kept.append(best)
            order = [i for i in order if iou(boxes[best], boxes[i]) < threshold]
    return kept
