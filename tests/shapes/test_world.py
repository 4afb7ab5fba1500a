"""The shapes world: deterministic scenes, exact masks, captions that never say where."""

import re

import numpy as np

from lmd_bot.shapes.world import IMAGE_SIZE, PALETTE, masks, render, sample_scene

_WHERE = re.compile(r"\b(left|right|top|bottom|above|below|under|over|next|beside|behind|corner)\b")


def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene(123), sample_scene(123)
    assert a == b
    assert np.array_equal(render(a), render(b))
    assert sample_scene(124) != a


def test_masks_are_exact_disjoint_and_hold_the_object_colour():
    for seed in range(60):
        scene = sample_scene(seed)
        image = render(scene)
        object_masks = masks(scene)
        assert object_masks.shape == (len(scene.objects), IMAGE_SIZE, IMAGE_SIZE)
        if len(scene.objects) > 1:
            assert object_masks.sum(0).max() == 1, "objects overlap"
        for obj, mask in zip(scene.objects, object_masks, strict=True):
            assert mask.sum() > 40
            assert (image[mask] == PALETTE[obj.colour]).all()
            # Nothing outside the masks has an object colour.
        painted = np.zeros(image.shape[:2], bool)
        for colour in PALETTE.values():
            painted |= (image == colour).all(-1)
        assert np.array_equal(painted, object_masks.any(0) if len(scene.objects) else painted & False)


def test_captions_name_every_object_and_never_a_place():
    counts = []
    for seed in range(400):
        scene = sample_scene(seed)
        assert not _WHERE.search(scene.caption), scene.caption
        assert scene.background.value in scene.caption
        named = sorted(i for phrase in scene.phrases for i in phrase.objects)
        assert named == list(range(len(scene.objects)))
        for phrase in scene.phrases:
            assert scene.caption[phrase.start : phrase.end] == phrase.text
            assert all(scene.objects[i].shape.value in phrase.text for i in phrase.objects)
        counts += [len(p.objects) for p in scene.phrases]
    # Counts above two of one kind are rare, as in the captions SD learned from.
    assert 0 < sum(c > 2 for c in counts) < 0.05 * len(counts)
    assert sum(c == 2 for c in counts) > 0.05 * len(counts)
