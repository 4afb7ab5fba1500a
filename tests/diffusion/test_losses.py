"""The box energy and the transfer loss on small synthetic attention maps, computed by hand."""

import pytest
import torch

from lmd_bot.diffusion.losses import (
    EnergyWeights,
    PhraseTarget,
    box_energy,
    box_mask,
    layout_loss,
    transfer_loss,
)

TOP_LEFT = (0.0, 0.0, 0.5, 0.5)  # the top-left 2x2 cells of a 4x4 grid


def _maps() -> torch.Tensor:
    """(heads=2, 4, 4, tokens=3); token 1 is the phrase."""
    maps = torch.zeros(2, 4, 4, 3)
    # Head 0: inside the box 0.9, 0.5, 0.1, 0.0; outside two cells 0.3 and 0.2, the rest 0.
    maps[0, 0, 0, 1], maps[0, 0, 1, 1], maps[0, 1, 0, 1] = 0.9, 0.5, 0.1
    maps[0, 3, 3, 1], maps[0, 2, 3, 1] = 0.3, 0.2
    # Head 1: 0.2 everywhere inside, 0.05 everywhere outside.
    maps[1, :, :, 1] = 0.05
    maps[1, :2, :2, 1] = 0.2
    return maps


def test_box_mask_rasterizes_the_union_with_reference_rounding():
    mask = box_mask([TOP_LEFT, (0.75, 0.75, 1.0, 1.0)], 4, 4)
    assert mask.sum() == 5
    assert mask[0, 0] == mask[1, 1] == mask[3, 3] == 1
    assert mask[2, 2] == 0


def test_box_energy_matches_hand_computed_value():
    # k_fg = max(1, floor(0.2 * 4)) = 1 and k_bg = max(1, floor(0.2 * 12)) = 2.
    # fg: (1 - 0.9) + (1 - 0.2) = 0.9;  bg: 4 * ((0.3 + 0.2) / 2 + (0.05 + 0.05) / 2) = 1.2
    energy = box_energy(_maps(), box_mask([TOP_LEFT], 4, 4), [1], EnergyWeights())
    assert energy.item() == pytest.approx(2.1)


def test_box_energy_sums_over_heads_and_averages_over_tokens():
    maps = _maps()
    mask = box_mask([TOP_LEFT], 4, 4)
    doubled = torch.cat([maps, maps])  # four heads
    assert box_energy(doubled, mask, [1], EnergyWeights()).item() == pytest.approx(4.2)
    # Token 2 is all zeros: fg 1 per head, bg 0 -> 2; averaged with token 1's 2.1.
    assert box_energy(maps, mask, [1, 2], EnergyWeights()).item() == pytest.approx((2.1 + 2.0) / 2)


def test_layout_loss_normalizes_by_phrases_and_layers():
    maps = _maps()
    phrase = PhraseTarget(positions=[1], word_position=1, boxes=[TOP_LEFT])
    one = layout_loss({"a": maps}, [phrase], EnergyWeights())
    two_layers = layout_loss({"a": maps, "b": maps}, [phrase], EnergyWeights())
    assert one.item() == pytest.approx(2.1)
    assert two_layers.item() == pytest.approx(2.1)


def test_transfer_loss_compares_normalized_maps_inside_the_box():
    mask = box_mask([TOP_LEFT], 4, 4)
    overall = torch.zeros(2, 4, 4)
    reference = torch.zeros(2, 4, 4)
    overall[0, 0, 0] = overall[0, 0, 1] = 1.0  # head 0: (0.5, 0.5) after normalizing
    reference[0, 0, 0] = 1.0  # head 0: (1, 0)
    overall[1, 1, 1] = reference[1, 1, 1] = 0.7  # head 1: identical
    overall[:, 3, 3] = 5.0  # outside the box: ignored
    # head 0: |0.5 - 1| + |0.5 - 0| = 1; head 1: 0; mean over heads 0.5
    assert transfer_loss(overall, reference, mask).item() == pytest.approx(0.5, abs=1e-4)


def test_layout_loss_adds_weighted_transfer_per_box():
    maps = _maps()
    reference = {"a": torch.zeros(3, 2, 4, 4)}  # steps x heads x h x w
    reference["a"][1, :, 0, 0] = 1.0
    phrase = PhraseTarget(positions=[1], word_position=1, boxes=[TOP_LEFT], references=[reference])
    expected_transfer = transfer_loss(maps[..., 1], reference["a"][1], box_mask([TOP_LEFT], 4, 4))
    loss = layout_loss({"a": maps}, [phrase], EnergyWeights(), step_index=1, transfer_weight=2.0)
    assert loss.item() == pytest.approx(2.1 + 2.0 * expected_transfer.item(), abs=1e-5)


def test_energy_gradient_moves_attention_into_the_box():
    torch.manual_seed(0)
    logits = torch.randn(8, 8, 8, 6, requires_grad=True)  # heads, h, w, tokens
    mask = box_mask([(0.5, 0.25, 1.0, 0.75)], 8, 8)

    def inside_share(probs):
        token = probs[..., 3]
        return ((token * mask).sum() / token.sum()).item()

    probs = logits.softmax(dim=-1)
    before_energy = box_energy(probs, mask, [3], EnergyWeights())
    before_share = inside_share(probs)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(50):
        optimizer.zero_grad()
        box_energy(logits.softmax(dim=-1), mask, [3], EnergyWeights()).backward()
        optimizer.step()
    probs = logits.softmax(dim=-1)
    assert box_energy(probs, mask, [3], EnergyWeights()) < before_energy - 1.0
    assert inside_share(probs) > before_share + 0.25
