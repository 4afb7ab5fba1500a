"""Per-object results across rounds: the cache itself, and rounds that count UNet passes."""

import os

import numpy as np
import pytest
import torch

from lmd_bot.diffusion.cache import ObjectCache, object_run_key
from lmd_bot.diffusion.latents import shift_quanta, shift_quantum_px
from lmd_bot.diffusion.objects import ObjectResult
from lmd_bot.diffusion.pipeline import LmdPipeline
from lmd_bot.diffusion.spec import build_spec
from lmd_bot.layout.schema import SceneLayout
from lmd_bot.rendering import RenderMode


def _result(value: float) -> ObjectResult:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 3:6] = True
    return ObjectResult(
        trajectory=torch.full((3, 1, 4, 8, 8), value),
        mask=mask,
        maps={"layer": torch.full((2, 8, 2, 2), value)},
        box=(0.1, 0.2, 0.5, 0.6),
        guidance_losses=(7.5, 6.0),
    )


def _same(a: ObjectResult, b: ObjectResult) -> bool:
    return (
        torch.equal(a.trajectory, b.trajectory)
        and torch.equal(a.mask, b.mask)
        and a.maps.keys() == b.maps.keys()
        and all(torch.equal(a.maps[k], b.maps[k]) for k in a.maps)
        and a.box == b.box
        and a.guidance_losses == b.guidance_losses
    )


def test_memory_tier_drops_the_least_recently_used_beyond_its_bytes():
    size = _result(0).nbytes
    cache = ObjectCache(2 * size)
    cache.put("a", _result(1))
    cache.put("b", _result(2))
    assert cache.get("a") is not None  # now "b" is the least recently used
    cache.put("c", _result(3))
    assert cache.get("b") is None and len(cache) == 2 and cache.memory_bytes == 2 * size
    assert _same(cache.get("a"), _result(1)) and _same(cache.get("c"), _result(3))
    assert (cache.hits, cache.misses) == (3, 1)
    small = ObjectCache(size - 1)
    small.put("a", _result(1))  # larger than the whole budget: not kept, and no error
    assert small.get("a") is None and len(small) == 0


def test_disk_tier_survives_the_process_and_bad_files_are_plain_misses(tmp_path):
    ObjectCache(0, directory=tmp_path, max_disk_bytes=2**20).put("a", _result(1))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    fresh = ObjectCache(2**20, directory=tmp_path, max_disk_bytes=2**20)
    assert _same(fresh.get("a"), _result(1))
    assert len(fresh) == 1  # read once, then held in memory

    (tmp_path / "junk.pt").write_bytes(b"not a tensor file")
    torch.save({"trajectory": torch.zeros(3)}, tmp_path / "wrong.pt")
    assert fresh.get("junk") is None and fresh.get("wrong") is None and fresh.get("nothing") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # the bad entries are gone


def test_disk_tier_is_pruned_oldest_used_first(tmp_path):
    cache = ObjectCache(0, directory=tmp_path, max_disk_bytes=2**20)
    cache.put("a", _result(1))
    file_size = (tmp_path / "a.pt").stat().st_size
    cache = ObjectCache(0, directory=tmp_path, max_disk_bytes=2 * file_size + file_size // 2)
    cache.put("b", _result(2))
    os.utime(tmp_path / "a.pt", (2000, 2000))
    os.utime(tmp_path / "b.pt", (1000, 1000))  # "b" was used longest ago
    cache.put("c", _result(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "c.pt"]
    assert cache.get("a") is not None
    assert (tmp_path / "a.pt").stat().st_mtime > 2000  # reading marks it used


# --- rounds of one scene ---------------------------------------------------------------------

CAT = {"id": 1, "caption": "a gray cat", "box": [20, 260, 160, 200]}
BALL = {"id": 2, "caption": "a red ball", "box": [130, 330, 100, 100]}
CUP = {"id": 3, "caption": "a white cup", "box": [40, 40, 120, 120]}
STEPS = 3
OBJECT_STEPS = 2  # per-object runs stop after the overall run's last guided step (1)


def _layout(*objects):
    return SceneLayout.model_validate({"objects": list(objects), "background": "A garden"})


def _moved(obj, dx=0, dy=0):
    x, y, w, h = obj["box"]
    return {**obj, "box": [x + dx, y + dy, w, h]}


# At 128 px a quantum (64 image px) is 256 layout px: each object moves by exactly one.
SIZE = 128
QUANTUM = shift_quantum_px(8)  # the tiny models' VAE downsamples by 8, as SD's does
MOVED = (_moved(CAT, dx=256), _moved(BALL, dx=256), _moved(CUP, dy=256))


class _Rounds:
    """Renders rounds through one pipeline and cache, recording each UNet call's batch size."""

    def __init__(self, components, mode):
        self.pipe = LmdPipeline(components)
        self.cache = ObjectCache(2**30)
        self.mode = mode
        self.unet = components.gligen_unet if mode == "lmd_plus" else components.unet

    def render(self, layout, seed=7, cache=True):
        batches = []
        hook = self.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
        try:
            result = getattr(self.pipe, self.mode)(
                build_spec(layout, seed),
                steps=STEPS,
                guidance_scale=7.5,
                height=SIZE,
                width=SIZE,
                cache=self.cache if cache else None,
            )
        finally:
            hook.remove()
        # Denoising calls run a CFG batch (2 rows per latent); guidance calls are conditional only.
        return result, [b for b in batches if b > 1]


@pytest.fixture(scope="module")
def lmd_plus_rounds(components):
    rounds = _Rounds(components, "lmd_plus")
    first = rounds.render(_layout(CAT, BALL, CUP))
    move = rounds.render(_layout(*MOVED))
    change = rounds.render(_layout(MOVED[0], {**MOVED[1], "caption": "a blue ball"}, MOVED[2]))
    reseed = rounds.render(_layout(MOVED[0], {**MOVED[1], "caption": "a blue ball"}, MOVED[2]), seed=8)
    return first, move, change, reseed


def test_first_round_runs_every_object_in_one_batch(lmd_plus_rounds):
    (result, batches), *_ = lmd_plus_rounds
    assert batches == [6] * OBJECT_STEPS + [2] * STEPS  # 3 objects x CFG together, then the overall run
    assert result.stats.object_runs == 3 and result.stats.object_cache_hits == 0


def test_a_move_only_round_runs_no_per_object_denoising_and_shifts_the_runs(lmd_plus_rounds):
    (first, _), (move, batches), _, _ = lmd_plus_rounds
    assert batches == [2] * STEPS  # the overall run only
    assert move.stats.object_runs == 0 and move.stats.object_cache_hits == 3
    before = {run.spec.id: run for run in first.objects}
    for run in move.objects:
        assert run.cached and run.offset == {1: (0, 1), 2: (0, 1), 3: (1, 0)}[run.spec.id]
        old = before[run.spec.id]
        assert torch.equal(run.result.trajectory, old.result.trajectory)
        assert torch.equal(run.trajectory, shift_quanta(old.trajectory, run.offset, (SIZE, SIZE), QUANTUM))
        assert torch.equal(run.mask, shift_quanta(old.mask, run.offset, (SIZE, SIZE), QUANTUM))
    assert not torch.equal(move.latents, first.latents)  # the scene itself is redrawn


def test_changing_one_of_three_objects_reruns_exactly_that_one(lmd_plus_rounds):
    _, (move, _), (change, batches), _ = lmd_plus_rounds
    assert batches == [2] * OBJECT_STEPS + [2] * STEPS  # one object alone (CFG), then the overall run
    assert change.stats.object_runs == 1 and change.stats.object_cache_hits == 2
    assert {run.spec.id: run.cached for run in change.objects} == {1: True, 2: False, 3: True}
    kept = {run.spec.id: run for run in move.objects}
    for run in change.objects:
        if run.cached:
            assert torch.equal(run.trajectory, kept[run.spec.id].trajectory)


def test_a_new_scene_seed_reruns_every_object(lmd_plus_rounds):
    *_, (reseed, batches) = lmd_plus_rounds
    assert batches == [6] * OBJECT_STEPS + [2] * STEPS
    assert reseed.stats.object_runs == 3 and reseed.stats.object_cache_hits == 0


def test_lmd_move_reuse_is_exact(components_no_sam):
    """LMD draws each object centred whatever its box: a cached move renders what a fresh one does."""
    rounds = _Rounds(components_no_sam, "lmd")
    rounds.render(_layout(CAT, BALL))
    cached, batches = rounds.render(_layout(MOVED[0], MOVED[1]))
    fresh, _ = rounds.render(_layout(MOVED[0], MOVED[1]), cache=False)
    assert batches == [2] * STEPS and cached.stats.object_runs == 0
    assert np.array_equal(np.asarray(cached.image), np.asarray(fresh.image))


def test_the_key_holds_everything_that_determines_a_run_but_not_the_position(components):
    import dataclasses

    pipe = LmdPipeline(components)

    def key(objects=(CAT, BALL), *, background="A garden", negative="", seed=7, pipeline=pipe, **settings):
        data = {"objects": list(objects), "background": background, "negative": negative}
        spec = build_spec(SceneLayout.model_validate(data), seed)
        obj = spec.object(1)
        mode = settings.pop("mode", RenderMode.LMD_PLUS)
        params = settings.pop(
            "params", pipeline.lmd_plus_params if mode is RenderMode.LMD_PLUS else pipeline.lmd_params
        )
        settings = {"steps": 3, "guidance_scale": 7.5, "image_hw": (128, 128), **settings}
        return object_run_key(pipeline.c, spec, obj, obj.nbox, mode, params, **settings)

    base = key()
    assert key((_moved(CAT, dx=100, dy=-50), BALL)) == base  # a move: shift the cached run
    assert key((CAT, _moved(BALL, dx=60))) == base  # other objects do not matter
    renamed = dataclasses.replace(components, gligen_name="other-weights")
    different = [
        key(background="A beach"),  # enters the object's prompt
        key(negative="dogs"),  # enters the object's negative prompt
        key(({**CAT, "caption": "a black cat"}, BALL)),
        key(({**CAT, "box": [20, 260, 200, 200]}, BALL)),  # its size
        key(seed=8),
        key(steps=4),
        key(guidance_scale=5.0),
        key(image_hw=(256, 256)),
        key(mode=RenderMode.LMD),
        key(params=pipe.lmd_plus_params.model_copy(update={"gligen_beta": 0.3})),
        key(pipeline=LmdPipeline(renamed)),
    ]
    assert len({base, *different}) == len(different) + 1
