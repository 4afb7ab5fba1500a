"""Object masks: smoothing, SAM's selection rule, the attention-map fallback."""

import torch

from lmd_bot.diffusion.masks import (
    MaskParams,
    attention_masks,
    box_pixels,
    box_prompt_masks,
    gaussian_blur,
    pick_mask,
    resize_mask,
    select_mask,
)


def test_gaussian_blur_keeps_mass_and_peak_with_mirrored_borders():
    image = torch.zeros(16, 16)
    image[5, 9] = 1.0
    blurred = gaussian_blur(image, 1.5)
    assert torch.isclose(blurred.sum(), torch.tensor(1.0), atol=1e-5)
    assert divmod(int(blurred.argmax()), 16) == (5, 9)
    assert torch.allclose(blurred[5, 8], blurred[5, 10]) and torch.allclose(blurred[4, 9], blurred[6, 9])
    corner = torch.zeros(16, 16)
    corner[0, 0] = 1.0
    # A mirrored border keeps all the mass in the image (zero padding would lose about 3/4).
    assert torch.isclose(gaussian_blur(corner, 1.5).sum(), torch.tensor(1.0), atol=1e-5)
    # Radius 6 on a 4x4 grid mirrors more than once and still works.
    assert gaussian_blur(torch.ones(4, 4), 1.5).allclose(torch.ones(4, 4))


def test_resize_mask_keeps_every_touched_cell():
    mask = torch.zeros(512, 512, dtype=torch.bool)
    mask[100:110, 100:110] = True
    small = resize_mask(mask, 64, 64)
    assert small.any() and small.sum() <= 4


def test_select_mask_prefers_the_largest_confident_overlapping_mask():
    coarse = torch.zeros(4, 4, dtype=torch.bool)
    coarse[:2, :2] = True
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True  # matches the coarse mask
    masks[1, :24, :24] = True  # larger, overlaps well
    masks[2, :, :] = True  # largest, IoU 0.25 with the coarse mask
    params = MaskParams()
    assert select_mask(masks, torch.tensor([0.9, 0.9, 0.9]), coarse, params) == 2
    assert select_mask(masks, torch.tensor([0.9, 0.9, 0.5]), coarse, params) == 1  # low confidence
    masks[2, :16, :16] = False  # now it misses the coarse mask entirely
    assert select_mask(masks, torch.tensor([0.9, 0.9, 0.9]), coarse, params) == 1
    # Low confidence everywhere: the penalties cancel, the largest overlapping one wins.
    assert select_mask(masks, torch.tensor([0.1, 0.1, 0.1]), coarse, params) == 1


def test_sam_masks_are_compared_on_the_latent_grid_as_in_the_reference():
    """Areas count latent cells, not pixels: thin lines through every latent cell beat a solid
    half-image block, although the block has more pixels (the reference's choice)."""
    lines = torch.zeros(512, 512, dtype=torch.bool)
    lines[3::8, :] = True  # one pixel row per latent row, where bilinear resizing samples
    lines[:, 3::8] = True
    block = torch.zeros(512, 512, dtype=torch.bool)
    block[:, :256] = True
    assert block.sum() > lines.sum()
    coarse = torch.ones(16, 16, dtype=torch.bool)
    chosen = pick_mask(torch.stack([lines, block]), torch.tensor([0.9, 0.9]), coarse, (64, 64), MaskParams())
    assert chosen.shape == (64, 64) and chosen.all()


def test_sam_box_prompt_is_in_whole_pixels_rounded_as_the_reference():
    # Width and height are rounded separately (shift-invariant sizes), then clamped.
    assert box_pixels((0.1001, 0.2, 0.5003, 1.2), (512, 512)) == (51, 102, 256, 512)


def test_attention_mask_is_thresholded_and_limited_to_the_box():
    token_map = torch.zeros(16, 16)
    token_map[6:10, 6:10] = 1.0
    token_map[0, 0] = 1.0  # a stray peak far outside the box
    (mask,) = attention_masks(
        [token_map],
        nboxes=[(0.3, 0.3, 0.7, 0.7)],
        latent_hw=(64, 64),
        image_hw=(512, 512),
        params=MaskParams(),
    )
    assert mask.shape == (64, 64) and mask.dtype == torch.bool
    assert mask[32, 32] and not mask[0:8, 0:8].any()
    rows, _ = torch.nonzero(mask, as_tuple=True)
    assert rows.min() >= 0.3 * 64 - 4 and rows.max() < 0.7 * 64 + 4


def test_empty_attention_falls_back_to_the_box():
    (mask,) = attention_masks(
        [torch.zeros(16, 16)],
        nboxes=[(0.25, 0.25, 0.5, 0.5)],
        latent_hw=(64, 64),
        image_hw=(512, 512),
        params=MaskParams(),
    )
    assert mask.sum() == 16 * 16 and mask[16:32, 16:32].all()


def test_sam_masks_come_from_the_points_at_the_attention_peaks_in_one_call(components):
    from PIL import Image

    maps = [torch.zeros(8, 8), torch.zeros(8, 8)]
    maps[0][2, 5] = 1.0
    maps[1][6, 1] = 1.0
    images = [Image.new("RGB", (256, 256), (120, 30, 200)), Image.new("RGB", (256, 256), (20, 130, 20))]
    points = []
    hook = components.sam.model.register_forward_pre_hook(
        lambda m, args, kwargs: points.append(kwargs["input_points"].clone()), with_kwargs=True
    )
    try:
        masks = attention_masks(
            maps,
            nboxes=[(0.3, 0.3, 0.7, 0.7), (0.0, 0.5, 0.4, 1.0)],
            latent_hw=(32, 32),
            image_hw=(256, 256),
            params=MaskParams(),
            sam=components.sam,
            images=images,
        )
    finally:
        hook.remove()
    assert len(points) == 1 and points[0].shape[0] == 2  # both objects in one SAM call
    for mask in masks:
        assert mask.shape == (32, 32) and mask.dtype == torch.bool and mask.any()


def test_box_prompted_sam_masks_match_one_by_one_calls(components):
    """Batching SAM's calls changes nothing: each object's mask is the one a call of its own gives."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(3)]
    boxes = [(0.1, 0.1, 0.5, 0.6), (0.5, 0.2, 0.9, 0.9), (0.0, 0.6, 0.3, 1.0)]
    kwargs = {"latent_hw": (32, 32), "image_hw": (256, 256), "params": MaskParams()}
    together = box_prompt_masks(components.sam, images, nboxes=boxes, **kwargs)
    alone = [
        box_prompt_masks(components.sam, [im], nboxes=[b], **kwargs)[0]
        for im, b in zip(images, boxes, strict=True)
    ]
    assert all(torch.equal(a, b) for a, b in zip(together, alone, strict=True))
