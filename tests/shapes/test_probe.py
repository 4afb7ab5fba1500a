"""The shapes probes' own measurement: decoding a token's position from its features."""

import numpy as np

from lmd_bot.shapes.probe import position_r2


def _tokens(scenes: int, side: int, channels: int, rng) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side]
    where = np.stack([xs.ravel(), ys.ravel()], 1) / (side - 1)
    noise = rng.normal(size=(scenes, side * side, channels))
    return where, noise


def test_features_that_carry_the_position_decode_it_everywhere():
    rng = np.random.default_rng(0)
    where, noise = _tokens(30, 8, 16, rng)
    features = noise * 0.05
    features[..., :2] += where  # a positional code, as SD's features carry one
    r2, interior = position_r2(features)
    assert r2 > 0.95 and interior > 0.8, (r2, interior)


def test_features_without_position_decode_nothing_and_an_edge_code_only_at_the_edges():
    rng = np.random.default_rng(1)
    where, noise = _tokens(30, 8, 16, rng)
    r2, interior = position_r2(noise)
    assert abs(r2) < 0.05 and interior < 0.05, (r2, interior)
    # What zero padding gives a convolution: whether a token is on the picture's border, and which.
    edges = noise * 0.05
    edges[..., 0] += where[:, 0] == 0
    edges[..., 1] += where[:, 0] == 1
    edges[..., 2] += where[:, 1] == 0
    edges[..., 3] += where[:, 1] == 1
    r2, interior = position_r2(edges)
    assert 0.2 < r2 < 0.8 and interior < 0.05, (r2, interior)
