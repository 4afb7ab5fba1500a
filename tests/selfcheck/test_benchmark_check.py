"""'lmd-bot eval shapes --self-check' on random shapes-sized models (plumbing: the trained weights
are not needed to see the comparison and the detector roles in the report)."""

import json

import pytest
import torch

from lmd_bot.cli import main
from lmd_bot.diffusion.tiny import clip_tokenizer, ddim_scheduler
from lmd_bot.selfcheck.roles import roles
from lmd_bot.shapes import models


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    models.new_unet(1).save_pretrained(folder / "sd" / "unet")
    models.new_vae(0).save_pretrained(folder / "sd" / "vae")
    models.new_text_encoder(2).save_pretrained(folder / "sd" / "text_encoder")
    clip_tokenizer().save_pretrained(folder / "sd" / "tokenizer")
    ddim_scheduler().save_pretrained(folder / "sd" / "scheduler")
    models.new_unet(3, gated=True).save_pretrained(folder / "gligen" / "unet")
    return folder


def test_eval_shapes_compares_with_and_without_the_check_and_flags_a_checker_that_scores(
    random_weights, tmp_path, capsys
):
    out = tmp_path / "bench"
    args = ["eval", "shapes", "--weights", str(random_weights), "--modes", "lmd+", "--per-task", "1"]
    args += ["--steps", "2", "--self-check", "--check-retries", "1", "--out", str(out)]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    names = [run["name"] for run in report["runs"]]
    assert names == ["lmd+", "lmd+ + self-check (checked by its own scoring detector: flattered)"]
    assert report["settings"]["scoring detector"] == "shapes detector"
    assert report["settings"]["checking detector (self-check)"] == "shapes"
    warning, comparison = report["notes"]
    assert warning.startswith("Warning: the self-check used the scoring detector")
    assert comparison.startswith("lmd+: self-check gain (points) negation ")
    assert (
        "average " in comparison and "extra time per image " in comparison and "s, re-renders" in comparison
    )
    assert "**Warning: the self-check used the scoring detector" in (out / "report.md").read_text()
    # Every checked image recorded what its check did; the plain images had none.
    records = [json.loads(p.read_text()) for p in sorted((out / "lmd++check").glob("*/render.json"))]
    assert len(records) == 4 and all(r["self_check"]["line"].startswith("self-check") for r in records)
    assert all("check_seconds" in r["stats"] for r in records)
    assert not any("self_check" in json.loads(p.read_text()) for p in (out / "lmd+").glob("*/render.json"))
    printed = capsys.readouterr().err
    assert (
        "self-check gain (points)" in printed
        and "Warning: the self-check used the scoring detector" in printed
    )


def test_a_checker_other_than_the_scorer_is_named_and_not_flagged():
    settings, notes = roles("OWL-ViT", "OWLv2")
    assert settings == {"scoring detector": "OWL-ViT", "checking detector (self-check)": "OWLv2"}
    assert notes == []
    assert roles("OWLv2", "owlv2")[1] and roles("shapes detector", "shapes")[1]
    assert roles("OWLv2", None)[0]["checking detector (self-check)"] == "none (no self-check)"
