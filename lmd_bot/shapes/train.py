"""Training the shapes models, phase by phase, resumable and reproducible from a seed.

Phases (docs/shapes.md):

1. ``vae``: the autoencoder, on random 32 px crops of scenes (it is fully convolutional), L1 + MSE
   + a small KL term, until every palette colour comes back within :data:`COLOUR_TOLERANCE` on
   held-out scenes (a VAE trained for minutes shifts colours, and every sample shows it), then
   the latent scaling factor (1 / std of the latents, SD's 0.18215 for this VAE).
2. ``joint``: UNet + text encoder on the frozen VAE's latents: epsilon loss (min-SNR-5 weighted),
   the attention grounding loss of :mod:`lmd_bot.shapes.grounding`, captions dropped 10% of the
   time to the negative prompts the product sends as the unconditional text. After
   ``gligen_start`` steps every ``gligen_every``-th step trains the GLIGEN adapters instead (the
   gated UNet shares the base's weights; only the position net and the fusers learn, from every
   object's box and phrase, grounding dropped 10% of the time), so a checkpoint of any step can
   be exported with both models.
3. ``adapters``: GLIGEN's own recipe, the base frozen: the base takes its moving average (the
   weights every export ships) and only the adapters learn, on every step. In the joint phase
   they get a quarter of the steps, against a base that moves under them.

Every batch is drawn from ``(seed, phase, step)`` alone, so a resumed run sees exactly the data
and noise an uninterrupted one would. The state (models, EMA, optimizer, loss history) is written
atomically to ``checkpoint.pt`` every few minutes and at each phase's end.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lmd_bot.diffusion.gligen import MAX_OBJECTS, grounding_inputs
from lmd_bot.diffusion.spec import Span, negative_prompt
from lmd_bot.diffusion.tokens import token_span
from lmd_bot.errors import LmdError
from lmd_bot.shapes import models
from lmd_bot.shapes.auxiliary import PositionHeads, install_routing_capture, routing_loss
from lmd_bot.shapes.grounding import GroundingTargets, grounding_loss, install_capture
from lmd_bot.shapes.world import IMAGE_SIZE, PALETTE, masks, render, sample_scene

log = logging.getLogger(__name__)

PHASES = ("vae", "joint", "adapters")
COLOUR_TOLERANCE = 10.0  # max mean absolute error (0..255) inside objects, any palette colour
# What the product sends as the unconditional text: "" (diffusers' default) and the negatives.
UNCONDITIONAL_TEXTS = ("", negative_prompt("", per_object=False), negative_prompt("", per_object=True))
MAX_PHRASES = 5


@dataclass
class TrainConfig:
    seed: int = 0
    vae_steps: int = 1500
    vae_min_steps: int = 300
    joint_steps: int = 7_700  # the committed weights' base: raise it where compute is cheap
    adapter_steps: int = 200_000  # in practice: until stopped; every checkpoint can be exported
    gligen_start: int = 300  # joint steps of the base alone before the adapters start learning
    gligen_every: int = 4  # from then on, every 4th joint step trains the adapters
    vae_batch: int = 16
    batch: int = 8
    lr: float = 5e-4
    gligen_lr: float = 1e-3
    grounding_weight: float = 0.1
    ema_decay: float = 0.999
    checkpoint_minutes: float = 5.0
    caption_dropout: float = 0.1
    # Auxiliary losses for the adapters' prerequisites (lmd_bot/shapes/auxiliary.py); 0 = off.
    position_weight: float = 0.0
    route_weight: float = 0.0


class CheckpointError(LmdError, ValueError):
    """A checkpoint that cannot be read, or that this run cannot resume: one line for the CLI."""


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint :meth:`Trainer.save` wrote, or CheckpointError saying why ``path`` is none."""
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:  # torn, or another file
        reason = f"it cannot be read: {exc}"
        raise CheckpointError(f"{path} is not a shapes training checkpoint ({reason})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"{path} is not a shapes training checkpoint (it holds no training state)")
    return payload


@dataclass
class TrainState:
    config: TrainConfig
    phase: str = "vae"
    step: int = 0
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    vae_scaling: float = 1.0
    notes: list[str] = field(default_factory=list)


def _step_seed(seed: int, phase: str, step: int) -> int:
    digest = hashlib.blake2b(f"shapes:{seed}:{phase}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**62 - 1)


def _images(seeds) -> tuple[torch.Tensor, list]:
    scenes = [sample_scene(int(s)) for s in seeds]
    pixels = np.stack([render(s) for s in scenes]).astype(np.float32) / 127.5 - 1
    return torch.from_numpy(pixels).permute(0, 3, 1, 2), scenes


def colour_errors(vae, n: int = 32) -> dict[str, float]:
    """Mean absolute error (0..255) per palette colour over the *inside* of objects (masks less
    their one-pixel rim) in held-out scenes: a colour shift, not the softness of edges."""
    images, scenes = _images(range(10_000_000, 10_000_000 + n))
    with torch.no_grad():
        recon = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    recon = ((recon + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    errors: dict[str, list[float]] = {}
    for img, scene in zip(recon, scenes, strict=True):
        for obj, mask in zip(scene.objects, masks(scene), strict=True):
            inside = mask.copy()
            for axis in (0, 1):
                for shift in (1, -1):
                    inside &= np.roll(mask, shift, axis)
            errors.setdefault(obj.colour.value, []).append(
                float(np.abs(img[inside] - np.array(PALETTE[obj.colour])).mean())
            )
    return {colour: float(np.mean(v)) for colour, v in sorted(errors.items())}


class Trainer:
    def __init__(self, out_dir: Path, config: TrainConfig, device: torch.device) -> None:
        from lmd_bot.diffusion.tiny import clip_tokenizer

        self.out_dir = out_dir
        self.device = device
        self.tokenizer = clip_tokenizer()
        self.schedule = models.noise_schedule()
        self.alphas = self.schedule.alphas_cumprod.to(device)
        seed = config.seed
        self.vae = models.new_vae(seed).to(device)
        self.unet = models.new_unet(seed + 1).to(device)
        self.text_encoder = models.new_text_encoder(seed + 2).to(device)
        self.gligen: torch.nn.Module | None = None
        self.ema: dict[str, torch.nn.Module] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.adapter_optimizer: torch.optim.Optimizer | None = None
        self.position: PositionHeads | None = None  # with its own optimizer: training-only
        self.position_optimizer: torch.optim.Optimizer | None = None
        self._routing: dict[str, torch.Tensor] | None = None
        self.state = TrainState(config=config)
        self._last_save = time.monotonic()
        self._stop_requested = False

    def request_stop(self) -> None:
        """End the run after the step in progress, with a checkpoint (safe from a signal handler:
        an interrupt mid-step would save half an optimizer update and break exact resumption)."""
        self._stop_requested = True

    @property
    def stopped_early(self) -> bool:
        return self._stop_requested

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "state": {**asdict(self.state), "config": asdict(self.state.config)},
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "gligen": self.gligen.state_dict() if self.gligen is not None else None,
            "ema": {name: model.state_dict() for name, model in self.ema.items()},
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "adapter_optimizer": self.adapter_optimizer.state_dict() if self.adapter_optimizer else None,
            "position": self.position.state_dict() if self.position is not None else None,
            "position_optimizer": self.position_optimizer.state_dict() if self.position_optimizer else None,
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.checkpoint_path)  # a kill mid-write never leaves a torn checkpoint
        self._last_save = time.monotonic()
        from lmd_bot.shapes.curves import draw_loss_curves

        (self.out_dir / "loss.png").write_bytes(draw_loss_curves(self.state.history))

    def load(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        payload = read_checkpoint(self.checkpoint_path, self.device)
        saved = payload["state"]
        config = TrainConfig(**saved.pop("config"))
        # Step budgets may be raised on resume; the seed may not change.
        if config.seed != self.state.config.seed:
            raise CheckpointError(
                f"{self.checkpoint_path} was trained with seed {config.seed}, not {self.state.config.seed}"
            )
        if saved["phase"] == "adapters" and config.joint_steps != self.state.config.joint_steps:
            raise CheckpointError(
                f"checkpoint's base is frozen after {config.joint_steps} joint steps: "
                f"--joint-steps {self.state.config.joint_steps} cannot resume it"
            )
        self.state = TrainState(config=self.state.config, **saved)
        self.vae.load_state_dict(payload["vae"])
        self.unet.load_state_dict(payload["unet"])
        self.text_encoder.load_state_dict(payload["text_encoder"])
        self.vae.config.scaling_factor = self.state.vae_scaling
        if payload["gligen"] is not None:
            self.gligen = models.new_unet(self.state.config.seed + 3, gated=True).to(self.device)
            self.gligen.load_state_dict(payload["gligen"])  # then tied to the base again
        self._begin_phase(self.state.phase, fresh=False)
        for name, weights in payload["ema"].items():
            self.ema[name].load_state_dict(weights)
        if payload["optimizer"] is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(payload["optimizer"])
        if payload.get("adapter_optimizer") is not None and self.adapter_optimizer is not None:
            self.adapter_optimizer.load_state_dict(payload["adapter_optimizer"])
        if payload.get("position") is not None and self.position is not None:
            self.position.load_state_dict(payload["position"])
            self.position_optimizer.load_state_dict(payload["position_optimizer"])
        return True

    # ---------------------------------------------------------------- phases
    def _begin_phase(self, phase: str, *, fresh: bool) -> None:
        cfg = self.state.config
        for model in (self.vae, self.unet, self.text_encoder):
            model.requires_grad_(False)
        self.state.phase = phase
        if fresh:
            self.state.step = 0
        if phase == "vae":
            self.vae.requires_grad_(True)
            self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=cfg.lr, weight_decay=0.0)
            self.ema = {}
            return
        if self.gligen is None:
            self.gligen = models.new_unet(cfg.seed + 3, gated=True).to(self.device)
        tie_base_weights(self.gligen, self.unet)
        if phase == "adapters":
            self._begin_adapters(fresh=fresh)
            return
        # joint: the base (UNet + text encoder) and the GLIGEN adapters, which share its weights
        self.unet.requires_grad_(True)
        self.text_encoder.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            [*self.unet.parameters(), *self.text_encoder.parameters()], lr=cfg.lr, weight_decay=0.0
        )
        self.adapter_optimizer = self._new_adapter_optimizer()
        self.ema = self._new_ema()
        if cfg.position_weight > 0 and self.position is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 4)
                self.position = PositionHeads(self.unet).to(self.device)
            # A read-out learns far faster than the base it reads: its own, larger step.
            self.position_optimizer = torch.optim.AdamW(self.position.parameters(), lr=1e-2, weight_decay=0.0)

    def _begin_adapters(self, *, fresh: bool) -> None:
        """The base is frozen at the moving average an export ships, so the adapters learn on the
        very base they will run with; the adapters' optimizer and moving average carry on."""
        if fresh:
            with torch.no_grad():
                for name in ("unet", "text_encoder"):
                    for p, e in zip(
                        getattr(self, name).parameters(), self.ema[name].parameters(), strict=True
                    ):
                        p.copy_(e)
        else:  # resuming: the checkpoint's state is loaded into these next
            self.adapter_optimizer = self._new_adapter_optimizer()
            self.ema = self._new_ema()
        self.optimizer = None

    def _new_adapter_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.state.config
        return torch.optim.AdamW(adapter_parameters(self.gligen), lr=cfg.gligen_lr, weight_decay=0.0)

    def _new_ema(self) -> dict[str, torch.nn.Module]:
        return {
            "unet": copy.deepcopy(self.unet),
            "text_encoder": copy.deepcopy(self.text_encoder),
            "adapters": torch.nn.ParameterList([p.detach().clone() for p in adapter_parameters(self.gligen)]),
        }

    def _update_ema(self, names: tuple[str, ...]) -> None:
        step = self.state.step + (self.state.config.joint_steps if self.state.phase == "adapters" else 0)
        decay = min(self.state.config.ema_decay, (1 + step) / (10 + step))
        live = {
            "unet": list(self.unet.parameters()),
            "text_encoder": list(self.text_encoder.parameters()),
            "adapters": adapter_parameters(self.gligen) if self.gligen is not None else [],
        }
        with torch.no_grad():
            for name in names:
                for e, p in zip(self.ema[name].parameters(), live[name], strict=True):
                    e.lerp_(p, 1 - decay)

    def _record(self, key: str, value: float) -> None:
        self.state.history.setdefault(key, []).append((self._global_step(), value))

    def _global_step(self) -> int:
        cfg = self.state.config
        before = {"vae": 0, "joint": cfg.vae_steps, "adapters": cfg.vae_steps + cfg.joint_steps}
        return before[self.state.phase] + self.state.step

    # ---------------------------------------------------------------- steps
    def _vae_step(self, rng_seed: int) -> dict[str, float]:
        cfg = self.state.config
        gen = np.random.default_rng(rng_seed)
        images, _ = _images(gen.integers(0, 2**62, cfg.vae_batch))
        crops = []
        for img in images:
            y, x = (int(v) for v in gen.integers(0, IMAGE_SIZE - 32 + 1, 2))
            crops.append(img[:, y : y + 32, x : x + 32])
        x = torch.stack(crops).to(self.device)
        posterior = self.vae.encode(x).latent_dist
        generator = torch.Generator().manual_seed(rng_seed)
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(
            self.device
        )
        recon = self.vae.decode(z).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + 1e-4 * kl
        self._optimise(loss, list(self.vae.parameters()), self.optimizer, self.state.config.lr)
        return {"vae_rec": rec.item(), "vae_kl": kl.item()}

    def _batch(self, rng_seed: int):
        """Latents, token ids, grounding targets and scenes of one batch (deterministic)."""
        cfg = self.state.config
        gen = np.random.default_rng(rng_seed)
        images, scenes = _images(gen.integers(0, 2**62, cfg.batch))
        captions = []
        token_phrase = torch.zeros(len(scenes), 77, MAX_PHRASES)
        phrase_masks = torch.zeros(len(scenes), MAX_PHRASES, IMAGE_SIZE, IMAGE_SIZE)
        valid = torch.zeros(len(scenes), MAX_PHRASES)
        for row, scene in enumerate(scenes):
            if gen.random() < cfg.caption_dropout:
                captions.append(UNCONDITIONAL_TEXTS[int(gen.integers(len(UNCONDITIONAL_TEXTS)))])
                continue
            captions.append(scene.caption)
            object_masks = masks(scene)
            for k, phrase in enumerate(scene.phrases[:MAX_PHRASES]):
                span = token_span(self.tokenizer, scene.caption, Span(start=phrase.start, end=phrase.end))
                token_phrase[row, list(span.positions), k] = 1.0
                phrase_masks[row, k] = torch.from_numpy(object_masks[list(phrase.objects)].any(0))
                valid[row, k] = 1.0
        ids = self.tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            latents = self.vae.encode(images.to(self.device)).latent_dist
            generator = torch.Generator().manual_seed(rng_seed)
            noise_z = torch.randn(latents.mean.shape, generator=generator).to(self.device)
            z0 = (latents.mean + latents.std * noise_z) * self.state.vae_scaling
        targets = GroundingTargets(
            token_phrase.to(self.device), phrase_masks.to(self.device), valid.to(self.device)
        )
        return z0, ids.to(self.device), targets, scenes, captions, generator

    def _diffusion_loss(self, unet, z0, encoder_states, targets, generator, **unet_kwargs):
        cfg = self.state.config
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        t = torch.randint(0, 1000, (z0.shape[0],), generator=generator).to(self.device)
        signal = self.alphas[t]
        noisy = signal.sqrt().view(-1, 1, 1, 1) * z0 + (1 - signal).sqrt().view(-1, 1, 1, 1) * noise
        store = install_capture(unet) if not hasattr(unet, "_shapes_store") else unet._shapes_store
        unet._shapes_store = store
        pred = unet(noisy, t, encoder_states, **unet_kwargs).sample
        snr = signal / (1 - signal)
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 for epsilon prediction
        eps = ((pred - noise) ** 2).mean((1, 2, 3))
        eps_loss = (eps * weight).mean()
        ground, ratio = grounding_loss(store, targets, signal)
        store.clear()
        return eps_loss + cfg.grounding_weight * ground, eps_loss.item(), ground.item(), ratio.item()

    def _base_step(self, rng_seed: int) -> dict[str, float]:
        z0, ids, targets, _, _, generator = self._batch(rng_seed)
        states = self.text_encoder(ids)[0]
        loss, eps, ground, ratio = self._diffusion_loss(self.unet, z0, states, targets, generator)
        metrics = {"eps": eps, "grounding": ground, "in_mask_ratio": ratio}
        if self.position is not None:
            position = self.position.loss()
            loss = loss + self.state.config.position_weight * position
            metrics["position"] = position.item()
            self.position_optimizer.zero_grad(set_to_none=True)
        params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        self._optimise(loss, params, self.optimizer, self.state.config.lr)
        if self.position is not None:
            self.position_optimizer.step()
        self._update_ema(("unet", "text_encoder"))
        return metrics

    def _gligen_step(self, rng_seed: int) -> dict[str, float]:
        z0, ids, targets, scenes, captions, generator = self._batch(rng_seed)
        gen = np.random.default_rng(rng_seed + 1)
        routing = self.state.config.route_weight > 0
        slot_masks = torch.zeros(len(scenes), MAX_OBJECTS, IMAGE_SIZE, IMAGE_SIZE)  # routing's targets
        with torch.no_grad():
            states = self.text_encoder(ids)[0].detach()
            rows_boxes, rows_phrases = [], []
            for scene, caption in zip(scenes, captions, strict=True):
                dropped = caption != scene.caption or gen.random() < 0.1
                boxes, phrases = [], []
                object_masks = masks(scene) if routing else None
                for phrase in [] if dropped else scene.phrases:
                    for index in phrase.objects:
                        obj = scene.objects[index]
                        if object_masks is not None:
                            slot_masks[len(rows_boxes), len(boxes)] = torch.from_numpy(object_masks[index])
                        boxes.append(obj.nbox)
                        # The overall run grounds every box with its group's phrase ("two red
                        # circles"), the per-object run with the object's own caption.
                        phrases.append(phrase.text if gen.random() < 0.5 else obj.caption())
                rows_boxes.append(boxes)
                rows_phrases.append(phrases)
            unique = sorted({p for row in rows_phrases for p in row})
            pooled = {}
            if unique:
                enc = self.tokenizer(unique, padding=True, return_tensors="pt").input_ids.to(self.device)
                features = self.text_encoder(enc).pooler_output
                pooled = dict(zip(unique, features, strict=True))
            dim = models.TEXT_DIM
            feats = [
                torch.stack([pooled[p] for p in row]) if row else torch.zeros(0, dim) for row in rows_phrases
            ]
            gligen_inputs = grounding_inputs(rows_boxes, feats, device=self.device, dtype=torch.float32)
        if routing and self._routing is None:
            self.gligen._shapes_store = install_capture(self.gligen)  # before: it resets processors
            self._routing = install_routing_capture(self.gligen)
        loss, eps, ground, ratio = self._diffusion_loss(
            self.gligen, z0, states, targets, generator, cross_attention_kwargs={"gligen": gligen_inputs}
        )
        metrics = {"gligen_eps": eps, "gligen_grounding": ground, "gligen_in_mask_ratio": ratio}
        if self._routing is not None:
            route, share = routing_loss(self._routing, slot_masks.to(self.device))
            loss = loss + self.state.config.route_weight * route
            metrics["route_share"] = share
        # Only the adapters learn from this loss (GLIGEN's recipe: the base is frozen for it).
        adapters = adapter_parameters(self.gligen)
        self._optimise(loss, adapters, self.adapter_optimizer, self.state.config.gligen_lr, only=adapters)
        self._update_ema(("adapters",))
        return metrics

    def _optimise(self, loss, params, optimizer, base_lr: float, *, only=None) -> None:
        """One AdamW step; ``only``: compute gradients for these parameters alone."""
        optimizer.zero_grad(set_to_none=True)
        if only is None:
            loss.backward()
        else:
            for p, g in zip(only, torch.autograd.grad(loss, only), strict=True):
                p.grad = g
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        # Warm-up: each optimizer's first 200 steps of the joint phase (the adapters phase
        # continues the adapters' optimizer).
        if self.state.phase == "joint":
            joint = self.state.step - (self.state.config.gligen_start if only is not None else 0)
            warmup = min(1.0, (max(joint, 0) + 1) / 200)
        else:
            warmup = 1.0
        for group in optimizer.param_groups:
            group["lr"] = base_lr * warmup
        optimizer.step()

    # ---------------------------------------------------------------- the loop
    def run(self, *, progress: bool = True) -> None:
        from tqdm import tqdm

        cfg = self.state.config
        if not self.load():
            self._begin_phase("vae", fresh=True)
        budgets = {"vae": cfg.vae_steps, "joint": cfg.joint_steps, "adapters": cfg.adapter_steps}
        for phase in PHASES[PHASES.index(self.state.phase) :]:
            if phase != self.state.phase and budgets[phase] == 0:
                continue  # a phase without steps never begins (a run can stop in the joint phase)
            if phase != self.state.phase:
                self._begin_phase(phase, fresh=True)
            bar = tqdm(
                total=budgets[phase],
                initial=self.state.step,
                desc=phase,
                disable=not progress,
                smoothing=0.05,
            )
            running: dict[str, float] = {}
            while self.state.step < budgets[phase]:
                seed = _step_seed(cfg.seed, phase, self.state.step)
                if phase == "vae":
                    metrics = self._vae_step(seed)
                elif phase == "adapters" or (
                    self.state.step >= cfg.gligen_start and self.state.step % cfg.gligen_every == 0
                ):
                    metrics = self._gligen_step(seed)
                else:
                    metrics = self._base_step(seed)
                self.state.step += 1
                for key, value in metrics.items():
                    running[key] = value if key not in running else 0.95 * running[key] + 0.05 * value
                if self.state.step % 25 == 0:
                    for key, value in running.items():
                        self._record(key, value)
                    bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()})
                bar.update(1)
                if phase == "vae" and self.state.step % 100 == 0 and self.state.step >= cfg.vae_min_steps:
                    errors = colour_errors(self.vae)
                    worst = max(errors.values())
                    self._record("vae_colour_error", worst)
                    log.info("VAE colour errors at step %d: %s", self.state.step, errors)
                    if worst <= COLOUR_TOLERANCE:
                        self.state.notes.append(
                            f"VAE colours within {worst:.1f}/255 at step {self.state.step}"
                        )
                        break
                if self._stop_requested:
                    break
                if time.monotonic() - self._last_save > cfg.checkpoint_minutes * 60:
                    self.save()
            bar.close()
            if self._stop_requested:
                self.save()
                return
            if phase == "vae":
                self._finish_vae()
            if phase != PHASES[-1]:
                self.save()
                self._snapshot(phase)
        self.save()
        log.info("training finished: %s", self.state.notes)

    def _finish_vae(self) -> None:
        images, _ = _images(range(20_000_000, 20_000_000 + 64))
        with torch.no_grad():
            z = self.vae.encode(images.to(self.device)).latent_dist.mode()
        self.state.vae_scaling = float(1.0 / z.std())
        self.vae.config.scaling_factor = self.state.vae_scaling
        errors = colour_errors(self.vae)
        self.state.notes.append(
            f"VAE done after {self.state.step} steps: colour errors {errors}, "
            f"scaling {self.state.vae_scaling:.4f}"
        )
        self.state.step = self.state.config.vae_steps  # the phase is complete

    def _snapshot(self, phase: str) -> None:
        """A copy of the checkpoint at each phase's end (export can always use the finished base)."""
        import shutil

        shutil.copyfile(self.checkpoint_path, self.out_dir / f"after-{phase}.pt")


def adapter_parameters(gligen) -> list[torch.nn.Parameter]:
    """The GLIGEN UNet's own parameters: the position net and the gated fusers."""
    return [p for n, p in gligen.named_parameters() if ".fuser." in n or n.startswith("position_net.")]


def tie_base_weights(gligen, unet) -> None:
    """Make every base parameter of the gated UNet *the same tensor* as the base UNet's, so the
    adapters always train on top of the current base (and a checkpoint holds the base once)."""
    base = dict(unet.named_parameters())
    for name, _ in list(gligen.named_parameters()):
        if name in base:
            owner_path, _, attr = name.rpartition(".")
            setattr(gligen.get_submodule(owner_path), attr, base[name])
    missing = [n for n, _ in gligen.named_parameters() if n not in base and ".fuser." not in n]
    if any(not n.startswith("position_net.") for n in missing):
        raise ValueError(f"the gated UNet has parameters the base lacks: {missing[:5]}")
