"""Capturing cross-attention maps on the few layers LMD reads (docs/method.md, "Attention layers").

Only the layers named by the caller get a :class:`CaptureProcessor`; every other layer keeps its
processor (diffusers' SDPA one), and a capture processor itself falls back to its layer's original
processor whenever nothing is being recorded, so only the passes that need maps pay for explicit
softmax attention. :func:`attention_capture` installs the processors and restores the originals
in ``finally``, errors and cancellation included.

Maps are softmax probabilities over all 77 text tokens (the start token included, not
renormalized). Batches are first-class: per-object runs of one round share each UNet call, so a
guidance pass records ``(batch, heads, h, w, tokens)`` and a denoising pass records, for each
conditional row of the CFG batch, that row's own token: ``(rows, heads, h, w)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

# diffusers module paths of SD v1.x cross-attention layers (the reference's "attn keys").
MID = "mid_block.attentions.0.transformer_blocks.0.attn2"
UP_1 = tuple(f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn2" for i in range(3))
# Guidance reads the 8x8 mid block and the first attention up block (16x16 at 512 px).
GUIDANCE_KEYS: tuple[str, ...] = (MID, *UP_1)
# The SAM point and the attention-map mask come from this 16x16 down-block layer.
SAM_KEY = "down_blocks.2.attentions.1.transformer_blocks.0.attn2"


class StopForward(Exception):
    """Raised once every map a guidance pass needs is recorded: the rest of the UNet is skipped."""


class AttentionStore:
    """What the capture processors record; one store per installed set of processors.

    Two recording modes, set for the duration of one UNet forward:

    - :meth:`guidance`: full maps (with autograd) of a conditional-only batch, ``(batch, heads, h,
      w, tokens)``; the forward is cut short by :class:`StopForward` once all requested layers ran,
      since guidance needs no output;
    - :meth:`tokens`: detached maps of one token per chosen row of a CFG batch (each object's word
      token from its conditional row), ``(rows, heads, h, w)`` in float32.

    With no keys requested nothing is recorded and every layer keeps its SDPA processor.
    """

    def __init__(self, latent_hw: tuple[int, int]) -> None:
        self.latent_hw = latent_hw
        self.maps: dict[str, torch.Tensor] = {}
        self._keys: frozenset[str] = frozenset()
        # (2, n): the rows and tokens to record in :meth:`tokens` mode, moved to the maps' device
        # once per recording (not once per layer).
        self._index: torch.Tensor | None = None
        self._stop_when_complete = False

    @contextmanager
    def guidance(self, keys: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
        with self._recording(keys, rows=None, tokens=None, stop=True):
            yield self.maps

    @contextmanager
    def tokens(
        self, keys: Sequence[str], rows: Sequence[int], tokens: Sequence[int]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Record token ``tokens[i]`` of batch row ``rows[i]``, for every ``i``."""
        if len(rows) != len(tokens):
            raise ValueError(f"{len(rows)} rows but {len(tokens)} tokens")
        with self._recording(keys, rows=list(rows), tokens=list(tokens), stop=False):
            yield self.maps

    @contextmanager
    def _recording(self, keys, *, rows, tokens, stop) -> Iterator[None]:
        self.maps = {}
        self._keys = frozenset(keys)
        self._index = None if rows is None else torch.tensor([rows, tokens], dtype=torch.long)
        self._stop_when_complete = stop
        try:
            yield
        finally:
            self._keys = frozenset()

    def wants(self, key: str) -> bool:
        return key in self._keys

    def grid(self, pixels: int) -> tuple[int, int]:
        """The (h, w) of a layer with ``pixels`` positions: the latent grid downsampled 2^k times."""
        lh, lw = self.latent_hw
        factor = round(math.sqrt(lh * lw / pixels))
        return lh // factor, lw // factor

    def put(self, key: str, probs: torch.Tensor, batch: int, heads: int) -> None:
        """Record ``probs`` of shape ``(batch * heads, pixels, tokens)`` for layer ``key``."""
        pixels, n_tokens = probs.shape[-2:]
        h, w = self.grid(pixels)
        maps = probs.view(batch, heads, h, w, n_tokens)
        if self._index is not None:
            if self._index.device != maps.device:
                self._index = self._index.to(maps.device, non_blocking=True)
            rows, tokens = self._index
            # Indices on the first and last dimensions: the result is (rows, heads, h, w).
            maps = maps[rows, :, :, :, tokens].detach().float()
        self.maps[key] = maps
        if self._stop_when_complete and self._keys <= self.maps.keys():
            raise StopForward


class CaptureProcessor:
    """Cross-attention with explicit probabilities, recorded into an :class:`AttentionStore`."""

    def __init__(self, key: str, store: AttentionStore, original) -> None:
        self.key = key
        self.store = store
        self.original = original

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if not self.store.wants(self.key):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if hidden_states.ndim != 3 or encoder_hidden_states is None:
            raise ValueError(f"{self.key} is not a cross-attention layer over (batch, pixels, channels)")
        # The cross-attention layers of SD's transformer blocks: no spatial or group norm, no
        # residual inside the layer; ``norm_cross`` and the output rescale are honoured.
        batch = hidden_states.shape[0]
        residual = hidden_states
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        self.store.put(self.key, probs, batch, attn.heads)
        return out


@contextmanager
def attention_capture(unet, keys: Sequence[str], latent_hw: tuple[int, int]) -> Iterator[AttentionStore]:
    """Install capture processors on ``keys`` (diffusers module paths) for the ``with`` block."""
    layers = {key: unet.get_submodule(key) for key in keys}
    store = AttentionStore(latent_hw)
    originals = {key: layer.get_processor() for key, layer in layers.items()}
    try:
        for key, layer in layers.items():
            layer.set_processor(CaptureProcessor(key, store, originals[key]))
        yield store
    finally:
        for key, layer in layers.items():
            layer.set_processor(originals[key])
