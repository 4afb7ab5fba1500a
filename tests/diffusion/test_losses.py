"""The box energy and the transfer loss: hand-computed values on small synthetic maps, and the
vectorised loss against the loop-by-loop one (tests/diffusion/loop_losses.py) on maps of the tiny
UNet, term by term, for several layouts."""

import contextlib

import pytest
import torch

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, StopForward, attention_capture
from lmd_bot.diffusion.losses import EnergyWeights, LayoutLoss, PhraseTarget, box_mask

from .loop_losses import box_energy, layout_loss, transfer_loss

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


def _terms(maps: dict, phrases, **kwargs):
    """The loss terms of one row; ``maps`` hold ``(heads, h, w, tokens)`` per layer."""
    step = kwargs.pop("step_index", 0)
    return LayoutLoss([phrases], EnergyWeights(), **kwargs).terms({k: m[None] for k, m in maps.items()}, step)


def test_box_mask_rasterizes_the_union_with_reference_rounding():
    mask = box_mask([TOP_LEFT, (0.75, 0.75, 1.0, 1.0)], 4, 4)
    assert mask.sum() == 5
    assert mask[0, 0] == mask[1, 1] == mask[3, 3] == 1
    assert mask[2, 2] == 0


def test_box_energy_matches_hand_computed_value():
    # k_fg = max(1, floor(0.2 * 4)) = 1 and k_bg = max(1, floor(0.2 * 12)) = 2.
    # fg: (1 - 0.9) + (1 - 0.2) = 0.9;  bg: 4 * ((0.3 + 0.2) / 2 + (0.05 + 0.05) / 2) = 1.2
    terms = _terms({"a": _maps()}, [PhraseTarget([1], 1, [TOP_LEFT])])
    assert terms.energy.tolist() == [[pytest.approx(2.1)]]
    assert terms.total.tolist() == [pytest.approx(2.1)]


def test_box_energy_sums_over_heads_and_averages_over_tokens():
    maps = _maps()
    doubled = torch.cat([maps, maps])  # four heads
    assert _terms({"a": doubled}, [PhraseTarget([1], 1, [TOP_LEFT])]).total.item() == pytest.approx(4.2)
    # Token 2 is all zeros: fg 1 per head, bg 0 -> 2; averaged with token 1's 2.1.
    two_tokens = _terms({"a": maps}, [PhraseTarget([1, 2], 1, [TOP_LEFT])])
    assert two_tokens.total.item() == pytest.approx((2.1 + 2.0) / 2)


def test_layout_loss_normalizes_by_phrases_and_layers():
    maps = _maps()
    phrase = PhraseTarget(positions=[1], word_position=1, boxes=[TOP_LEFT])
    two_layers = _terms({"a": maps, "b": maps}, [phrase])
    assert two_layers.energy.flatten().tolist() == [pytest.approx(2.1)] * 2
    assert two_layers.total.item() == pytest.approx(2.1)
    # A second phrase (token 2, energy 2.0) on the same maps: the mean over the phrases.
    two_phrases = _terms({"a": maps}, [phrase, PhraseTarget([2], 2, [TOP_LEFT])])
    assert two_phrases.total.item() == pytest.approx((2.1 + 2.0) / 2)


def test_transfer_loss_compares_normalized_maps_inside_the_box():
    maps = torch.zeros(2, 4, 4, 3)
    reference = torch.zeros(1, 2, 4, 4)  # steps x heads x h x w
    maps[0, 0, 0, 1] = maps[0, 0, 1, 1] = 1.0  # head 0: (0.5, 0.5) after normalizing
    reference[0, 0, 0, 0] = 1.0  # head 0: (1, 0)
    maps[1, 1, 1, 1] = reference[0, 1, 1, 1] = 0.7  # head 1: identical
    maps[:, 3, 3, 1] = 5.0  # outside the box: ignored
    phrase = PhraseTarget([1], 1, [TOP_LEFT], references=[{"a": reference}])
    # head 0: |0.5 - 1| + |0.5 - 0| = 1; head 1: 0; mean over heads 0.5
    assert _terms({"a": maps}, [phrase]).transfer.tolist() == [[pytest.approx(0.5, abs=1e-4)]]


def test_layout_loss_adds_weighted_transfer_per_box():
    maps = _maps()
    reference = {"a": torch.zeros(3, 2, 4, 4)}  # steps x heads x h x w
    reference["a"][1, :, 0, 0] = 1.0
    phrase = PhraseTarget(positions=[1], word_position=1, boxes=[TOP_LEFT], references=[reference])
    terms = _terms({"a": maps}, [phrase], step_index=1, transfer_weight=2.0)
    expected_transfer = transfer_loss(maps[..., 1], reference["a"][1], box_mask([TOP_LEFT], 4, 4))
    assert terms.transfer.item() == pytest.approx(expected_transfer.item(), abs=1e-6)
    assert terms.total.item() == pytest.approx(2.1 + 2.0 * expected_transfer.item(), abs=1e-5)


def test_energy_gradient_moves_attention_into_the_box():
    torch.manual_seed(0)
    logits = torch.randn(8, 8, 8, 6, requires_grad=True)  # heads, h, w, tokens
    box = (0.5, 0.25, 1.0, 0.75)
    mask = box_mask([box], 8, 8)
    loss = LayoutLoss([[PhraseTarget([3], 3, [box])]], EnergyWeights())

    def inside_share(probs):
        token = probs[..., 3]
        return ((token * mask).sum() / token.sum()).item()

    probs = logits.softmax(dim=-1)
    before_energy = loss({"a": probs[None]}).item()
    before_share = inside_share(probs)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(50):
        optimizer.zero_grad()
        loss({"a": logits.softmax(dim=-1)[None]}).sum().backward()
        optimizer.step()
    probs = logits.softmax(dim=-1)
    assert loss({"a": probs[None]}).item() < before_energy - 1.0
    assert inside_share(probs) > before_share + 0.25


# --- the vectorised loss equals the loops, term by term, on the tiny UNet's maps ------------------


@pytest.fixture(scope="module")
def unet_maps(components):
    """Guidance maps of 3 samples at 256 px (8x8 mid block, 16x16 up block) with their latents."""
    g = torch.Generator().manual_seed(11)
    latents = torch.randn(3, 4, 32, 32, generator=g)
    text = torch.randn(3, 77, 32, generator=g)

    def capture(z):
        with attention_capture(components.unet, GUIDANCE_KEYS, (32, 32)) as store:
            with store.guidance(GUIDANCE_KEYS) as maps, contextlib.suppress(StopForward):
                components.unet(z, 600, encoder_hidden_states=text)
            return dict(maps)

    return latents, capture


def _references(boxes, seed):
    """Per box, random positive word-token maps for 4 steps on the guidance layers' grids."""
    g = torch.Generator().manual_seed(seed)
    grids = {GUIDANCE_KEYS[0]: 4, **{key: 8 for key in GUIDANCE_KEYS[1:]}}
    return [{key: torch.rand(4, 8, n, n, generator=g) for key, n in grids.items()} for _ in boxes]


CAT = (0.1, 0.5, 0.45, 0.95)
DOG = (0.5, 0.4, 0.95, 0.9)
BIRD = (0.6, 0.05, 0.8, 0.3)
SKY = (0.0, 0.0, 1.0, 0.35)
# Several layouts, one per batch row: one phrase of two tokens; three phrases, one with two boxes,
# with transfer references; a small box and a big one.
LAYOUTS = [
    [PhraseTarget([4, 5], 5, [CAT])],
    [
        PhraseTarget([2, 3], 3, [CAT, DOG], references=_references([CAT, DOG], 1)),
        PhraseTarget([6], 6, [BIRD], references=_references([BIRD], 2)),
        PhraseTarget([8, 9, 10], 10, [SKY], references=_references([SKY], 3)),
    ],
    [PhraseTarget([7], 7, [BIRD]), PhraseTarget([3, 4], 4, [SKY])],
]


@pytest.mark.parametrize("step_index", [0, 3])
def test_vectorised_loss_equals_the_loops_term_by_term(unet_maps, step_index):
    latents, capture = unet_maps
    maps = capture(latents)
    terms = LayoutLoss(LAYOUTS, EnergyWeights()).terms(maps, step_index)
    energies, transfers, totals = [], [], []
    for row, phrases in enumerate(LAYOUTS):
        for phrase in phrases:
            energies.append(
                [
                    box_energy(
                        m[row], box_mask(phrase.boxes, *m.shape[2:4]), phrase.positions, EnergyWeights()
                    )
                    for m in maps.values()
                ]
            )
            for nbox, reference in zip(phrase.boxes, phrase.references or [], strict=False):
                transfers.append(
                    [
                        transfer_loss(
                            m[row][..., phrase.word_position],
                            reference[key][step_index],
                            box_mask([nbox], *m.shape[2:4]),
                        )
                        for key, m in maps.items()
                    ]
                )
        one_row = {key: m[row] for key, m in maps.items()}
        totals.append(layout_loss(one_row, phrases, EnergyWeights(), step_index=step_index))
    # Per layer and phrase (6 phrases over 3 rows), per layer and box (4 boxes with references).
    assert terms.energy.shape == (4, 6) and terms.transfer.shape == (4, 4)
    torch.testing.assert_close(terms.energy, torch.tensor(energies).T, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(terms.transfer, torch.tensor(transfers).T, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(terms.total, torch.stack(totals), rtol=1e-6, atol=1e-6)


def test_vectorised_gradient_equals_the_loops_and_row_subsets_keep_their_targets(unet_maps):
    latents, capture = unet_maps
    loss = LayoutLoss(LAYOUTS, EnergyWeights())

    def grad(fn):
        z = latents.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(capture(z)), z)
        return g

    def loops(maps):
        return sum(
            layout_loss({k: m[row] for k, m in maps.items()}, phrases, EnergyWeights(), step_index=2)
            for row, phrases in enumerate(LAYOUTS)
        )

    vectorised = grad(lambda maps: loss(maps, 2).sum())
    assert vectorised.abs().max() > 0
    torch.testing.assert_close(vectorised, grad(loops), rtol=1e-5, atol=1e-8)
    # A step that guides rows 0 and 2 only: the maps' second row is sample 2, with layout 2.
    maps = capture(latents)
    subset = {k: m[[0, 2]] for k, m in maps.items()}
    torch.testing.assert_close(loss(subset, 2, (0, 2)), loss(maps, 2)[[0, 2]], rtol=1e-6, atol=1e-6)
