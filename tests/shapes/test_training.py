"""Training is reproducible from its seed and resumes exactly; the grounding loss pulls the right way."""

import re
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from lmd_bot.diffusion.gligen import MAX_OBJECTS
from lmd_bot.shapes.auxiliary import routing_loss
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


def test_the_auxiliary_losses_train_and_a_run_with_them_resumes_exactly(tmp_path):
    """The position read-outs and the fusers' routing loss (docs/shapes.md) are part of the
    training state: a resumed run ends where an uninterrupted one does, read-outs included."""

    def config(steps: int) -> TrainConfig:
        return replace(_tiny(steps), position_weight=1.0, route_weight=0.1)

    from lmd_bot.shapes.assets import WEIGHTS_DIR
    from lmd_bot.shapes.export import start_from_export

    def trainer(folder: str, steps: int) -> Trainer:
        made = Trainer(tmp_path / folder, config(steps), torch.device("cpu"))
        if not made.checkpoint_path.exists():
            start_from_export(made, WEIGHTS_DIR)  # as such a run starts: no VAE phase to train
        made.run(progress=False)
        return made

    straight = trainer("a", 4)
    trainer("b", 3)
    resumed = trainer("b", 4)
    for a, b in [(straight.unet, resumed.unet), (straight.gligen, resumed.gligen)]:
        assert _same(a, b)
    assert _same(straight.position, resumed.position)
    metrics = straight._base_step(123)
    assert metrics["position"] > 0
    assert 0 < straight._gligen_step(456)["route_share"] < 1


def test_the_routing_loss_is_low_when_in_mask_tokens_attend_to_their_own_grounding_token():
    side, slots = 4, MAX_OBJECTS
    masks = torch.zeros(1, slots, 8, 8)
    masks[0, 0, :4, :4] = 1  # object 0: the top-left quarter
    masks[0, 1, 4:, 4:] = 1  # object 1: the bottom-right quarter
    visual = side * side

    def probs(own: bool) -> dict[str, torch.Tensor]:
        p = torch.zeros(1, 2, visual + slots, visual + slots)
        p[..., :, 0] = 1.0  # every token on visual token 0 ...
        for row in range(visual):
            y, x = divmod(row, side)
            slot = {(0, 0): 0, (1, 1): 1}.get((y // 2, x // 2))
            if slot is not None:  # ... but tokens inside an object on a grounding token
                target = slot if own else 1 - slot
                p[..., row, 0] = 0.2
                p[..., row, visual + target] = 0.8
        return {"fuser": p}

    good, good_share = routing_loss(probs(True), masks)
    bad, bad_share = routing_loss(probs(False), masks)
    assert good < bad
    assert abs(good_share - 0.8) < 1e-5 and bad_share == 0


def test_a_run_can_start_from_an_export_and_refuses_a_folder_that_is_none(tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    from lmd_bot.cli import main
    from lmd_bot.shapes.assets import WEIGHTS_DIR
    from lmd_bot.shapes.export import start_from_export
    from lmd_bot.shapes.train import adapter_parameters

    trainer = Trainer(tmp_path / "run", replace(_tiny(1), seed=0), torch.device("cpu"))
    start_from_export(trainer, WEIGHTS_DIR)
    resumed = Trainer(tmp_path / "run", replace(_tiny(1), seed=0), torch.device("cpu"))
    assert resumed.load() and (resumed.state.phase, resumed.state.step) == ("joint", 0)
    shipped = UNet2DConditionModel.from_pretrained(WEIGHTS_DIR / "gligen" / "unet").float()
    named = dict(shipped.named_parameters())
    adapters = [n for n, _ in resumed.gligen.named_parameters() if ".fuser." in n or "position_net." in n]
    for name, p in zip(adapters, adapter_parameters(resumed.gligen), strict=True):
        assert torch.allclose(p, named[name]), name
    base = dict(resumed.gligen.named_parameters())["mid_block.attentions.0.proj_in.weight"]
    assert torch.allclose(base, named["mid_block.attentions.0.proj_in.weight"])
    assert resumed.state.vae_scaling == pytest.approx(0.2825, abs=1e-4)

    init = ["shapes", "train", "--out", str(tmp_path / "new"), "--init", str(tmp_path), "--no-progress"]
    assert main(init) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == f"error: --init {tmp_path} is no export: it needs sd/ and gligen/ (lmd-bot shapes export)"
    assert not (tmp_path / "new" / "checkpoint.pt").exists()
