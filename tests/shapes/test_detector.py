"""The shapes detector is exact on the world's own renders and answers the benchmark's queries."""

import numpy as np
from PIL import Image

from lmd_bot.shapes.detector import ShapesDetector, detect
from lmd_bot.shapes.world import masks, render, sample_scene


def test_every_object_of_generated_scenes_is_found_exactly():
    objects = 0
    for seed in range(1000, 1150):
        scene = sample_scene(seed)
        found = detect(render(scene))
        assert len(found) == len(scene.objects), f"scene {seed}: {scene.caption}"
        for obj, mask in zip(scene.objects, masks(scene), strict=True):
            ious = [(d.mask & mask).sum() / (d.mask | mask).sum() for d in found]
            best = found[int(np.argmax(ious))]
            assert max(ious) >= 0.9
            assert (best.colour, best.shape) == (obj.colour, obj.shape), f"scene {seed}: {scene.caption}"
            assert best.box_iou(obj.box) >= 0.9
            objects += 1
    assert objects > 250


def test_queries_name_detections_like_the_benchmark_detector():
    scene = next(s for s in map(sample_scene, range(2000, 3000)) if len({o.shape for o in s.objects}) >= 2)
    image = Image.fromarray(render(scene))
    obj = scene.objects[0]
    plain = f"a photo of a {obj.shape.value}"
    coloured = f"a photo of {obj.caption()}"
    boxes = ShapesDetector().detect(image, [plain, coloured])
    same_shape = sum(o.shape == obj.shape for o in scene.objects)
    same_kind = sum((o.shape, o.colour) == (obj.shape, obj.colour) for o in scene.objects)
    assert sum(b.name == plain.removeprefix("a photo of ") for b in boxes) == same_shape
    assert sum(b.name == obj.caption() for b in boxes) == same_kind
    *_, w, h = next(b.box for b in boxes if b.name == obj.caption())
    assert w > 0 and h > 0


def test_an_empty_background_has_no_objects():
    scene = next(s for s in map(sample_scene, range(100)) if not s.objects)
    assert detect(render(scene)) == []
