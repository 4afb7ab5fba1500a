"""Noise blending, quantized shifts and composition on synthetic latents."""

import torch

from lmd_bot.diffusion.latents import (
    blend_noise,
    box_offset,
    compose,
    draw_noise,
    quantized_offset,
    rect_mask,
    shift,
    shift_quanta,
    shift_quantum_px,
)

SD_QUANTUM = shift_quantum_px(8)  # SD's factor-8 VAE: 64 px


def test_draw_noise_is_seeded_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = draw_noise(5, (1, 4, 8, 8))
    torch.manual_seed(456)
    b = draw_noise(5, (1, 4, 8, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, draw_noise(6, (1, 4, 8, 8)))


def test_blend_noise_changes_only_inside_the_box():
    bg, own = draw_noise(1, (1, 4, 8, 8)), draw_noise(2, (1, 4, 8, 8))
    mask = rect_mask((0.25, 0.25, 0.75, 0.75), 8, 8)
    blended = blend_noise(bg, own, mask, 0.01)
    assert torch.equal(blended[..., ~mask], bg[..., ~mask])
    expected = 0.99**0.5 * bg[..., mask] + 0.1 * own[..., mask]
    assert torch.allclose(blended[..., mask], expected)


def test_shift_moves_and_zero_fills():
    x = torch.arange(16.0).view(4, 4)
    moved = shift(x, 1, -2)
    assert moved[0].eq(0).all() and moved[:, 2:].eq(0).all()
    assert torch.equal(moved[1:, :2], x[:3, 2:])
    assert shift(x, 4, 0).eq(0).all()


def test_offsets_are_quantized_to_64_pixels():
    # 512 px image, 64x64 latent: a mask centred at x = 0.5 must reach a box centred at x = 0.8.
    mask = rect_mask((0.4, 0.5, 0.6, 0.8), 64, 64)
    dy, dx = quantized_offset(mask, (0.7, 0.5, 0.9, 0.8), (512, 512), SD_QUANTUM)
    assert (dy, dx) == (0, 2)  # 0.3 * 512 = 153.6 px -> 2.4 quanta -> 2
    dy, dx = quantized_offset(mask, (0.0, 0.0, 0.2, 0.3), (512, 512), SD_QUANTUM)
    assert (dy, dx) == (-4, -3)  # (0.15 - 0.65) * 8 = -4.0; (0.1 - 0.5) * 8 = -3.2
    empty = torch.zeros(64, 64, dtype=torch.bool)
    assert quantized_offset(empty, (0, 0, 1, 1), (512, 512), SD_QUANTUM) == (0, 0)


def test_alignment_centroid_is_the_mean_cell_index_as_in_the_reference():
    # Columns 0..7 of a 64-cell grid: mean index 3.5 (the reference's centroid), not 4.0 (the
    # mean cell centre). A box centred at x = 0.12125 is 0.5325 quanta away from the first and
    # 0.47 from the second: the reference moves the object one quantum, cell centres would not.
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[28:36, 0:8] = True
    target = (0.1, 28 / 64, 0.1425, 36 / 64)
    assert quantized_offset(mask, target, (512, 512), SD_QUANTUM) == (0, 1)


def test_shift_quanta_moves_every_grid_by_whole_cells_consistently():
    image_hw = (512, 512)
    for size, cells in ((64, 8), (16, 2), (8, 1)):
        grid = torch.zeros(size, size)
        grid[0, 0] = 1
        moved = shift_quanta(grid, (1, 2), image_hw, SD_QUANTUM)
        assert moved[cells, 2 * cells] == 1 and moved.sum() == 1
    # A 256 px image: a 32x32 latent moves 8 cells per quantum, its 4x4 mid map 1 cell.
    assert shift_quanta(torch.ones(1, 4, 4), (0, 1), (256, 256), SD_QUANTUM)[0, :, 0].eq(0).all()


def test_compose_puts_smaller_masks_on_top_and_copies_initial_noise_in_the_bounding_box():
    steps = 3
    h = w = 8
    background = torch.zeros(1, 1, h, w)
    big_traj = torch.stack([torch.full((1, 1, h, w), 10.0 + t) for t in range(steps + 1)])
    small_traj = torch.stack([torch.full((1, 1, h, w), 20.0 + t) for t in range(steps + 1)])
    big = torch.zeros(h, w, dtype=torch.bool)
    big[1:7, 1:7] = True
    small = torch.zeros(h, w, dtype=torch.bool)
    small[3:5, 3:5] = True
    # The small one is listed first; it must still end on top.
    comp = compose(background, [small_traj, big_traj], [small, big])
    assert torch.equal(comp.frozen, big | small)
    assert comp.owner[4, 4] == 1 and comp.owner[2, 2] == 2 and comp.owner[0, 0] == 0
    for t in range(steps + 1):
        assert comp.latents[t, 0, 0, 4, 4] == 20 + t
        if t:
            assert comp.latents[t, 0, 0, 2, 2] == 10 + t
            assert comp.latents[t, 0, 0, 0, 0] == 0
    # At the start each object brings its noise into its mask's bounding box grown by one cell:
    # the big mask's box covers the whole 8x8 grid...
    assert comp.latents[0, 0, 0, 0, 0] == 10
    # ... and the small one's box [2:6, 2:6] does not overwrite the big one's mask cells in it:
    # all boxes first, then all masks, as the reference composes.
    assert big[2, 2] and not small[2, 2] and comp.latents[0, 0, 0, 2, 2] == 10


def test_compose_respects_where_a_shifted_trajectory_has_no_data():
    background = torch.zeros(1, 1, 8, 8)
    traj = torch.ones(2, 1, 1, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    valid = torch.ones(8, 8, dtype=torch.bool)
    valid[:, :2] = False  # the columns a shift to the right vacated
    comp = compose(background, [traj], [mask], [valid])
    assert comp.latents[0, 0, 0, 1, 1] == 0 and comp.latents[0, 0, 0, 1, 2] == 1


def test_the_shift_quantum_is_eight_latent_cells_so_small_images_can_move_objects():
    """At 64 px with a factor-2 VAE (the shapes world), a 64 px quantum was the whole image: a box
    moved by 26 px shifted its object by nothing. Eight latent cells are 16 px there."""
    assert shift_quantum_px(8) == 64  # SD: unchanged
    quantum = shift_quantum_px(2)
    assert quantum == 16
    source, target = (0.55, 0.1, 0.85, 0.4), (0.55, 0.5, 0.85, 0.8)  # 0.4 of 64 px lower
    assert box_offset(source, target, (64, 64), quantum) == (2, 0)
    latents = torch.zeros(1, 4, 32, 32)
    latents[..., 4:8, 20:24] = 1
    moved = shift_quanta(latents, (2, 0), (64, 64), quantum)
    assert moved[..., 20:24, 20:24].eq(1).all() and moved.sum() == latents.sum()
