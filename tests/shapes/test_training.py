"""Training is reproducible from its seed and resumes exactly; the grounding loss pulls the right way."""

import re
import signal
import subprocess
import sys

import pytest
import torch

from lmd_bot.shapes.export import export_checkpoint
from lmd_bot.shapes.grounding import GroundingTargets, grounding_loss
from lmd_bot.shapes.train import TrainConfig, Trainer


def _tiny(joint_steps: int, adapter_steps: int = 0) -> TrainConfig:
    return TrainConfig(
        seed=3,
        vae_steps=2,
        vae_min_steps=2,
        joint_steps=joint_steps,
        adapter_steps=adapter_steps,
        vae_batch=2,
        batch=2,
        gligen_start=1,
        gligen_every=2,
        checkpoint_minutes=1e9,
    )


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    straight = Trainer(tmp_path / "a", _tiny(3), torch.device("cpu"))
    straight.run(progress=False)
    first = Trainer(tmp_path / "b", _tiny(2), torch.device("cpu"))
    first.run(progress=False)
    resumed = Trainer(tmp_path / "b", _tiny(3), torch.device("cpu"))
    resumed.run(progress=False)
    assert resumed.state.step == straight.state.step == 3
    assert (tmp_path / "b" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    pairs = [
        (straight.unet, resumed.unet),
        (straight.text_encoder, resumed.text_encoder),
        (straight.gligen, resumed.gligen),
        (straight.ema["unet"], resumed.ema["unet"]),
    ]
    for a, b in pairs:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
    # The adapters trained (step 2 was theirs) and the base under them is the base UNet itself.
    assert straight.gligen.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.weight is (
        straight.unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.weight
    )


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_the_adapters_phase_trains_the_adapters_alone_on_the_shipped_base_and_resumes_exactly(tmp_path):
    straight = Trainer(tmp_path / "a", _tiny(2, adapter_steps=2), torch.device("cpu"))
    straight.run(progress=False)
    first = Trainer(tmp_path / "b", _tiny(2, adapter_steps=1), torch.device("cpu"))
    first.run(progress=False)
    resumed = Trainer(tmp_path / "b", _tiny(2, adapter_steps=2), torch.device("cpu"))
    resumed.run(progress=False)
    assert (
        (resumed.state.phase, resumed.state.step)
        == (straight.state.phase, straight.state.step)
        == ("adapters", 2)
    )
    assert _same(straight.gligen, resumed.gligen) and _same(straight.ema["adapters"], resumed.ema["adapters"])

    # The base the adapters learned on is the joint phase's moving average, which every export
    # ships, and it did not move; the adapters did.
    joint = torch.load(tmp_path / "a" / "after-joint.pt", map_location="cpu", weights_only=False)
    for name in ("unet", "text_encoder"):
        for key, value in getattr(straight, name).state_dict().items():
            assert torch.equal(value, joint["ema"][name][key]), key
            assert torch.equal(value, straight.ema[name].state_dict()[key]), key
    before = joint["ema"]["adapters"]
    after = straight.ema["adapters"].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    facts = export_checkpoint(tmp_path / "a" / "checkpoint.pt", tmp_path / "export")
    assert (facts["joint_steps_done"], facts["adapter_steps_done"]) == (2, 2)
    assert (tmp_path / "export" / "gligen" / "unet").is_dir()

    # Its base frozen, a run cannot be resumed with another joint budget.
    with pytest.raises(ValueError, match="frozen after 2 joint steps"):
        Trainer(tmp_path / "a", _tiny(3, adapter_steps=2), torch.device("cpu")).run(progress=False)


def test_grounding_loss_is_low_when_the_phrase_attends_inside_its_mask():
    side, tokens = 4, 77
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 1  # top-left quadrant at image size; 2x2 cells of the 4x4 map
    targets = GroundingTargets(
        token_phrase=torch.zeros(1, tokens, 1).index_fill_(1, torch.tensor([2, 3]), 1.0),
        masks=mask,
        valid=torch.ones(1, 1),
    )
    inside = torch.zeros(side, side, dtype=torch.bool)
    inside[:2, :2] = True

    def probs(on_phrase: torch.Tensor) -> dict[str, torch.Tensor]:
        p = torch.full((1, 1, side * side, tokens), 0.0)
        p[..., 0] = 1.0  # everything on the start token ...
        rows = on_phrase.flatten()
        p[0, 0, rows, 0] = 0.2  # ... except where the phrase takes 80%
        p[0, 0, rows, 2] = 0.4
        p[0, 0, rows, 3] = 0.4
        return {"layer": p}

    good, good_ratio = grounding_loss(probs(inside), targets, torch.ones(1))
    bad, bad_ratio = grounding_loss(probs(~inside), targets, torch.ones(1))
    assert good < bad
    assert abs(good_ratio - 4.0) < 1e-3  # all of the phrase's attention in a quarter of the picture
    assert bad_ratio < 1e-3
    # No signal (pure noise, alpha_bar 0): nothing to localise, no loss.
    assert grounding_loss(probs(~inside), targets, torch.zeros(1))[0] == 0


def test_ctrl_c_saves_the_steps_done_since_the_last_checkpoint_and_says_how_to_resume(tmp_path):
    """Training runs for hours: an interrupt (Ctrl-C, or SIGTERM from `docker stop`) ends it at a
    step boundary with a checkpoint, not with the minutes since the last periodic one lost."""
    out = tmp_path / "train"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmd_bot.cli", "shapes", "train", "--out", str(out), "--seed", "3",
         "--vae-steps", "2", "--joint-steps", "500", "--adapter-steps", "0", "--batch", "2",
         "--gligen-start", "1", "--checkpoint-minutes", "1000"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = ""
    while not re.search(r"joint:.*\b([3-9]|[1-9]\d+)/500", seen):
        chunk = proc.stderr.read(1)
        assert chunk, f"training ended early: {seen[-2000:]}"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    seen += rest
    assert proc.returncode == 130, seen[-2000:]
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["state"]
    assert saved["phase"] == "joint" and 3 <= saved["step"] < 500
    assert f"stopped at joint step {saved['step']}" in seen and "same command" in seen


def test_a_file_that_is_no_checkpoint_of_this_run_is_one_line_not_a_traceback(tmp_path, capsys):
    """train (resuming), export and score on a checkpoint that is not one (a torn copy, another
    file) or is another seed's: each says so in one line (they were tracebacks from torch.load,
    or a ValueError's)."""
    from dataclasses import asdict

    from lmd_bot.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_text('{"not": "a checkpoint"}')
    train = ["shapes", "train", "--out", str(run), "--seed", "3", "--vae-steps", "2", "--no-progress"]
    assert main(train) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {run / 'checkpoint.pt'} is not a shapes training checkpoint (it cannot be read: "
        "invalid load key, '{'.)"
    )
    export = ["shapes", "export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(tmp_path / "w")]
    assert main(export) == 2
    assert "is not a shapes training checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()

    torch.save({"state": {"phase": "joint", "config": asdict(TrainConfig(seed=5))}}, run / "checkpoint.pt")
    assert main(train) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == f"error: {run / 'checkpoint.pt'} was trained with seed 5, not 3"
