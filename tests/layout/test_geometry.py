"""Box conventions and the rounding of docs/method.md, "Geometry"."""

import pytest

from lmd_bot.layout.geometry import GridRect, centered_nbox, nbox_to_grid_rect, xywh_to_xyxy_norm


def test_grid_rect_rounds_origin_and_size_separately():
    # x0 = round(0.3 * 16) = 5, width round(0.25 * 16) = 4, so x1 = 9
    assert nbox_to_grid_rect((0.3, 0.1, 0.55, 0.35), 16, 16) == GridRect(5, 2, 9, 6)
    # here rounding the far edge directly would give round(0.59 * 8) = 5, the reference gives 4
    assert nbox_to_grid_rect((0.28, 0.0, 0.59, 0.5), 8, 8) == GridRect(2, 0, 4, 4)


def test_grid_rect_size_is_shift_invariant():
    sizes = {
        (r.x1 - r.x0, r.y1 - r.y0)
        for dx in (0.0, 0.125, 0.25, 0.375)
        for r in [nbox_to_grid_rect((0.1 + dx, 0.2, 0.1 + dx + 0.23, 0.2 + 0.31), 64, 64)]
    }
    assert len(sizes) == 1


def test_grid_rect_is_clamped_to_grid():
    assert nbox_to_grid_rect((-0.2, 0.9, 0.5, 1.3), 10, 10) == GridRect(0, 9, 5, 10)


def test_half_cells_round_to_even_like_numpy():
    assert nbox_to_grid_rect((0.5 / 8, 1.5 / 8, 2.5 / 8, 3.5 / 8), 8, 8) == GridRect(0, 2, 2, 4)


def test_xywh_to_xyxy():
    assert xywh_to_xyxy_norm(128, 256, 64, 128, 512, 512) == (0.25, 0.5, 0.375, 0.75)


def test_centered_box_keeps_size_and_sits_on_floor():
    x0, y0, x1, y1 = centered_nbox((0.1, 0.1, 0.3, 0.5))
    assert (x0, x1) == pytest.approx((0.4, 0.6))
    assert (y0, y1) == pytest.approx((0.4, 0.8))


def test_centered_box_taller_than_floor_starts_at_top():
    assert centered_nbox((0.0, 0.0, 0.5, 0.9)) == pytest.approx((0.25, 0.0, 0.75, 0.9))
