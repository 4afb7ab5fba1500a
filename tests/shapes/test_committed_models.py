"""With the committed shapes models (lmd_bot/assets/shapes), lmd-bot can be seen to ground.

The figures asserted are what the committed weights achieve (docs/shapes.md, "What the committed
models do"), not the issue's targets: :data:`lmd_bot.shapes.scorecard.TEST_BOUNDS`, measured by the
same code as ``lmd-bot shapes score`` prints. Renders run through the product's renderer, loaded
through ``diffusion.sd_model`` / ``gligen_model`` like any checkpoint, on the CPU.
"""

import numpy as np
import pytest

from lmd_bot.config import DiffusionSettings
from lmd_bot.rendering import RenderMode
from lmd_bot.shapes.scorecard import TEST_BOUNDS, move_round, probe, render_cases


@pytest.fixture(scope="module")
def renderer():
    from lmd_bot.diffusion.renderer import build_renderer
    from lmd_bot.shapes.assets import shapes_diffusion_settings

    settings = shapes_diffusion_settings(DiffusionSettings(device="cpu", dtype="float32", object_cache_mb=64))
    return build_renderer(settings)


@pytest.fixture(scope="module")
def results(renderer):
    return {mode: render_cases(renderer, mode) for mode in (RenderMode.LMD_PLUS, RenderMode.SD)}


def test_cross_attention_localises_at_the_layers_lmd_reads(renderer):
    """LMD's guidance and its masks read these maps: each phrase's attention sits in its object."""
    for layer, (_side, ratio, phrase_mass, padding_mass) in probe(renderer).items():
        assert ratio >= TEST_BOUNDS.min_attention_ratio, (layer, ratio)
        # the phrase, not the padding tokens, holds the attention inside its object
        assert phrase_mass > padding_mass, (layer, phrase_mass, padding_mass)


def test_lmd_plus_puts_each_objects_colour_in_its_box_more_than_sd(results):
    lmd_plus = np.mean([c for r in results[RenderMode.LMD_PLUS] for c in r.colour])
    sd = np.mean([c for r in results[RenderMode.SD] for c in r.colour])
    assert lmd_plus - sd >= TEST_BOUNDS.min_colour_margin, (lmd_plus, sd)


def test_the_gligen_probe_tells_boxes_that_matter_from_boxes_that_cannot(renderer):
    """The scorecard's GLIGEN figure (docs/shapes.md): with the fusers' gates shut, the boxes cannot
    change the denoising error (the figure is exactly 1); opened, the fusers' output depends on
    the boxes and the figure leaves 1. (The committed adapters sit at about 1: they ignore them.)"""
    import copy

    import torch

    from lmd_bot.shapes.probe import PROBE_SEEDS, probe_gligen

    c = renderer.pipeline.c
    gated = copy.deepcopy(c.gligen_unet)  # the module's renderer stays as loaded
    gates = [p for n, p in gated.named_parameters() if ".alpha_" in n]

    def gain(alpha: float) -> float:
        with torch.no_grad():
            for p in gates:
                p.fill_(alpha)
        return probe_gligen(gated, c.vae, c.text_encoder, c.tokenizer, seeds=PROBE_SEEDS[:4]).gain

    assert gain(0.0) == 1.0
    assert abs(gain(3.0) - 1.0) > 0.003  # (measured: 0.990)


@pytest.fixture(scope="module")
def move(renderer):
    return move_round(renderer)


def test_a_move_only_round_keeps_the_unmoved_objects_pixels(move):
    """The unmoved object's box changes less than the picture does (per-object cache + frozen
    steps); with today's weights the free second half of denoising still changes it somewhat."""
    assert move.unmoved_mad <= TEST_BOUNDS.max_unmoved_mad, move
    assert move.unmoved_mad < TEST_BOUNDS.max_unmoved_share * move.whole_mad, move


def test_a_move_only_round_moves_the_moved_object(move):
    """The moved object's colour is in its new box after the move, far more than in its old box,
    and than in the new box before the move: its cached run went with the box (shifted by whole
    quanta), rather than GLIGEN's new box alone pulling some colour there."""
    assert move.moved_in_new >= TEST_BOUNDS.min_moved_share, move
    assert move.moved_in_new >= TEST_BOUNDS.min_moved_gain * move.moved_in_old, move
    assert move.moved_in_new >= TEST_BOUNDS.min_moved_gain * move.moved_in_new_before, move


def test_a_weights_folder_without_an_export_is_named_by_every_command(tmp_path, capsys):
    """probe and eval shapes took --weights for diffusion.sd_model and answered with
    LMD_DIFFUSION__SD_MODEL and the Hugging Face hub, which the user never named."""
    from lmd_bot.cli import main

    told = f"error: {tmp_path} has no sd/ folder: point --weights at an export (lmd-bot shapes export)"
    for argv in (
        ["shapes", "probe"],
        ["shapes", "score", "--eval-modes", ""],
        ["eval", "shapes", "--modes", "sd", "--per-task", "1", "--steps", "1", "--out", str(tmp_path / "r")],
    ):
        assert main([*argv, "--weights", str(tmp_path)]) == 2, argv
        assert capsys.readouterr().err.strip().splitlines() == [told], argv
