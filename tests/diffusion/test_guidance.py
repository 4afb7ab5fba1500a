"""Backward guidance: schedule, step size, the stale-loss stop, and that it lowers the energy."""

import itertools
import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from lmd_bot.diffusion.attention import GUIDANCE_KEYS, attention_capture
from lmd_bot.diffusion.guidance import BackwardGuidance, GuidanceParams, step_size
from lmd_bot.diffusion.losses import LayoutLoss, PhraseTarget
from lmd_bot.diffusion.tiny import ddim_scheduler


def test_iteration_schedule_is_the_reference_at_50_steps_and_stretches():
    params = GuidanceParams()
    at_50 = [params.iterations(i, 50) for i in range(50)]
    assert at_50 == [4] * 5 + [3] * 5 + [2] * 10 + [1] * 10 + [0] * 20
    assert [params.iterations(i, 5) for i in range(5)] == [4, 2, 1, 0, 0]  # steps 0, 10, 20 of 50
    assert [params.iterations(i, 6) for i in range(6)] == [4, 3, 2, 1, 0, 0]
    at_25 = [params.iterations(i, 25) for i in range(25)]
    assert sum(1 for n in at_25 if n) == 15 and at_25[0] == 4


def test_step_size_depends_on_the_scheduler():
    ddim = ddim_scheduler()
    ddim.set_timesteps(50)
    t = ddim.timesteps[3]
    assert step_size(ddim, 3, t) == pytest.approx(math.sqrt(1 - float(ddim.alphas_cumprod[int(t)])))
    euler = EulerDiscreteScheduler.from_config(ddim.config)
    euler.set_timesteps(50)
    assert step_size(euler, 3, euler.timesteps[3]) == pytest.approx(float(euler.sigmas[3]) ** 2)


def _guidance(components, store, params, steps=5):
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    target = [PhraseTarget(positions=[4, 5], word_position=5, boxes=[(0.5, 0.0, 1.0, 0.5)])]
    return BackwardGuidance(
        params,
        unet=components.unet,
        scheduler=components.scheduler,
        store=store,
        cond_embeddings=text,
        loss_fn=LayoutLoss([target], params.weights),
        steps=steps,
    )


def test_guidance_lowers_the_energy_on_the_tiny_unet(components):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    scheduler = components.scheduler
    scheduler.set_timesteps(5)
    t = scheduler.timesteps[0]
    strong = GuidanceParams(loss_scale=200.0)  # random weights respond weakly: a bigger step shows it
    with attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store:
        guidance = _guidance(components, store, strong)
        guided = guidance(latents, 0, t)
        assert guidance.passes == 4
        after = _guidance(components, store, strong.model_copy(update={"max_iter": (1,)}))
        after(guided, 0, t)
    losses = guidance.losses[0] + after.losses[0]  # energy before each update, then after the last
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] - 1e-3
    assert not torch.equal(guided, latents)


def test_stale_loss_stops_guidance_for_good_by_default(components):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    scheduler = components.scheduler
    scheduler.set_timesteps(5)
    # Any real energy is below 100: after the first pass the carried loss ends guidance.
    stale = GuidanceParams(loss_threshold=100.0)
    fresh = stale.model_copy(update={"stale_loss_stop": False})
    with attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store:
        runs = {}
        for name, params in (("stale", stale), ("fresh", fresh)):
            guidance = _guidance(components, store, params)
            z = latents
            for index, t in enumerate(scheduler.timesteps):
                z = guidance(z, index, t)
            runs[name] = (guidance.passes, len(guidance.losses[0]))
    # Stopping is decided once per step: the 4 iterations of step 0 run, only the first moves the
    # latents (as in the reference), and no later step is guided.
    assert runs["stale"] == (4, 1)
    # Re-checked at every guided step of 5 (4, 2 and 1 iterations): one update per step.
    assert runs["fresh"] == (4 + 2 + 1, 3)


def test_a_batch_is_guided_row_by_row_as_if_each_row_ran_alone(components):
    """Each row's loss on its own sample, its own stale-loss stop; same updates as one at a time."""
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 4, 16, 16, generator=g)
    text = torch.randn(2, 77, 32, generator=g)
    boxes = [(0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0)]
    # Row 1's loss is scaled down so that it falls below the threshold after its first pass.
    factors = [1.0, 0.05]
    params = GuidanceParams(loss_scale=200.0, loss_threshold=1.0)
    scheduler = components.scheduler
    scheduler.set_timesteps(5)
    t = scheduler.timesteps[0]

    layout = LayoutLoss([[PhraseTarget([4, 5], 5, [box])] for box in boxes], params.weights)

    def loss(maps, index, rows):
        return layout(maps, index, rows) * torch.tensor([factors[row] for row in rows])

    with attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store:
        batched = BackwardGuidance(
            params,
            unet=components.unet,
            scheduler=scheduler,
            store=store,
            cond_embeddings=text,
            loss_fn=loss,
            steps=5,
        )
        together = batched(latents, 0, t)
        alone = []
        for row in range(2):
            single = BackwardGuidance(
                params,
                unet=components.unet,
                scheduler=scheduler,
                store=store,
                cond_embeddings=text[row : row + 1],
                loss_fn=lambda maps, index, _rows, row=row: loss(maps, index, [row]),
                steps=5,
            )
            alone.append((single(latents[row : row + 1], 0, t), single))
    assert [len(x) for x in batched.losses] == [4, 1]  # row 1 stopped after one pass
    assert batched.passes == 4  # one UNet call per iteration for the rows guided in this step
    for row, (z, single) in enumerate(alone):
        assert single.losses[0] == pytest.approx(batched.losses[row], rel=1e-5)
        # Equal up to float rounding of batched kernels (differences of ~1e-5 on unit-scale latents).
        assert torch.allclose(together[row : row + 1], z, atol=1e-4)


def test_a_nan_in_guidance_is_loud_and_never_reaches_the_latents(components, caplog):
    import logging

    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    scheduler = components.scheduler
    scheduler.set_timesteps(5)
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store:
        guidance = BackwardGuidance(
            GuidanceParams(),
            unet=components.unet,
            scheduler=scheduler,
            store=store,
            cond_embeddings=text,
            loss_fn=lambda maps, _i, _rows: next(iter(maps.values())).sum().view(1) * float("nan"),
            steps=5,
        )
        with caplog.at_level(logging.ERROR):
            z = guidance(latents, 0, scheduler.timesteps[0])
            z = guidance(z, 1, scheduler.timesteps[1])
    assert torch.equal(z, latents)
    assert guidance.nonfinite == [(0, 0)]  # counted once: that sample's guidance stops there
    assert guidance.passes == 4  # step 0's iterations (stopping is decided once per step), no more
    assert any(r.levelno == logging.ERROR and "not finite" in r.getMessage() for r in caplog.records)


HOST_READS = frozenset({"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"})


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the tensor methods that bring a value to the host (a sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_a_guided_step_reads_the_device_once_however_many_iterations(components):
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    targets = [
        [PhraseTarget([4, 5], 5, [(0.5, 0.0, 1.0, 0.5)])],
        [PhraseTarget([4], 4, [(0.0, 0.0, 0.5, 1.0)])],
    ]
    scheduler = components.scheduler
    scheduler.set_timesteps(5)
    reads = {}
    with attention_capture(components.unet, GUIDANCE_KEYS, (16, 16)) as store:
        for n_iter in (1, 4):
            guidance = BackwardGuidance(
                GuidanceParams(max_iter=(n_iter,)),
                unet=components.unet,
                scheduler=scheduler,
                store=store,
                cond_embeddings=text,
                loss_fn=LayoutLoss(targets, GuidanceParams().weights),
                steps=5,
            )
            guidance(latents, 0, scheduler.timesteps[0])  # the first call reads the timesteps once
            with _HostReads() as counter:
                guidance(latents, 1, scheduler.timesteps[1])
            assert guidance.passes == 2 * n_iter
            reads[n_iter] = counter.count
    assert reads == {1: 1, 4: 1}  # the carried losses, once per step
