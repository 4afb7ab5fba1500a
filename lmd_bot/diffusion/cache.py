"""Per-object results kept across rounds, so that what the user did not change is not recomputed.

A scene is edited over many rounds; an object's run depends only on the object (caption, box
size), the scene seed and the settings, so a round that moves objects, or changes one of them,
reuses the others' runs (:class:`lmd_bot.diffusion.objects.ObjectResult`). The key is a hash of
everything that determines a run (:func:`object_run_key`); a different model, seed or setting is
simply a different key.

- In memory: least recently used entries go first once their bytes exceed ``max_bytes``
  (0 disables the memory tier). Entries live on the CPU; the GPU holds only the running round.
- On disk (optional): one ``<key>.pt`` file per entry in ``directory``, written atomically and
  pruned oldest-used first beyond ``max_disk_bytes``. Entries survive worker restarts.
- A miss is never an error: an unreadable, corrupt or foreign file is logged, removed and treated
  as a miss, and a failed write only logs.

The cache belongs to one renderer (the GPU worker keeps one renderer across jobs): no globals.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmd_bot.diffusion.objects import ObjectResult

if TYPE_CHECKING:
    from pydantic import BaseModel

    from lmd_bot.diffusion.components import Components
    from lmd_bot.diffusion.spec import GenerationSpec, ObjectSpec
    from lmd_bot.layout.geometry import NBox
    from lmd_bot.rendering import RenderMode

log = logging.getLogger(__name__)


def object_key(parts: Mapping[str, Any]) -> str:
    """A stable hex key for ``parts`` (JSON-able values; others by ``str``)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()


def object_run_key(
    components: Components,
    spec: GenerationSpec,
    obj: ObjectSpec,
    box: NBox,
    mode: RenderMode,
    params: BaseModel,
    *,
    steps: int,
    guidance_scale: float,
    image_hw: tuple[int, int],
) -> str:
    """The cache key of an object's run: everything that determines it, and nothing else.

    The model, device and dtype; the mode and every controller setting (guidance settings
    included: they also decide which attention steps are kept); the scheduler and its config,
    the step count, the CFG scale and the image size; the object's prompt ("{background} with
    {caption}") and negative prompt, its box **size** and its seeds (the scene seed draws the
    background noise it starts from). Not the box position: LMD generates every object in a
    centred box anyway; LMD+ generates it in place, and a run generated before a move is
    reused, shifted by the move in whole shift quanta (64 px for SD: lands within 32 px at 512 px).
    The batch size does not enter: a run's result does not depend on its batch companions
    (beyond float rounding).
    """
    scheduler = components.scheduler
    x0, y0, x1, y1 = box
    gligen = getattr(params, "gligen_beta", None) is not None
    parts = {
        # 2: SAM masks chosen on the latent grid, float32 trajectories; 3: runs stop after the last
        # step the overall run reads, masks from the clean image predicted there, SAM float16 on CUDA
        "version": 3,
        "model": components.gligen_name if gligen else components.sd_name,
        "device": components.device.type,
        "dtype": str(components.dtype),
        "mode": str(mode),
        "params": params.model_dump(mode="json"),
        "scheduler": [type(scheduler).__name__, dict(scheduler.config)],
        "steps": steps,
        "guidance_scale": guidance_scale,
        "image": list(image_hw),
        "prompt": obj.prompt,
        "span": [obj.span.start, obj.span.end],
        "negative": obj.negative,
        "box_size": [round(x1 - x0, 9), round(y1 - y0, 9)],
        "seed": obj.seed,
        "scene_seed": spec.seed,
        "sam": components.sam.name if components.sam is not None else None,
    }
    return object_key(parts)


class ObjectCache:
    def __init__(self, max_bytes: int, *, directory: Path | None = None, max_disk_bytes: int = 0) -> None:
        if max_bytes < 0 or max_disk_bytes < 0:
            raise ValueError("cache sizes must not be negative")
        self.max_bytes = max_bytes
        self.directory = directory
        self.max_disk_bytes = max_disk_bytes
        self._entries: OrderedDict[str, ObjectResult] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def memory_bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> ObjectResult | None:
        result = self._entries.get(key)
        if result is not None:
            self._entries.move_to_end(key)
        elif self.directory is not None:
            result = self._read(key)
            if result is not None:
                self._remember(key, result)
        if result is None:
            self.misses += 1
        else:
            self.hits += 1
        return result

    def put(self, key: str, result: ObjectResult) -> None:
        result = result.to("cpu")
        self._remember(key, result)
        if self.directory is not None:
            self._write(key, result)

    def clear(self) -> None:
        """Forget every entry held in memory (files on disk stay)."""
        self._entries.clear()
        self._bytes = 0

    # --- memory -------------------------------------------------------------------------------

    def _remember(self, key: str, result: ObjectResult) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        if result.nbytes > self.max_bytes:
            return
        self._entries[key] = result
        self._bytes += result.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    # --- disk ---------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.pt"

    def _read(self, key: str) -> ObjectResult | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            result = ObjectResult.from_state(torch.load(path, map_location="cpu", weights_only=True))
            os.utime(path)  # most recently used: pruned last
        except Exception as exc:  # any unreadable entry is a miss, never an error
            log.warning("object cache entry %s is unreadable (%s); it is removed", path, exc)
            path.unlink(missing_ok=True)
            return None
        return result

    def _write(self, key: str, result: ObjectResult) -> None:
        if result.nbytes > self.max_disk_bytes:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    torch.save(result.state(), fh)
                os.replace(tmp, self._path(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune()
        except OSError as exc:
            log.warning("cannot write the object cache entry to %s: %s", self.directory, exc)

    def _prune(self) -> None:
        files = []
        for path in self.directory.glob("*.pt"):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_disk_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
