"""The training-time grounding loss: each object word's cross-attention onto its object's mask.

Trained with the denoising loss alone, the shapes UNet's cross-attention does not localise: most of
every pixel's attention goes to the end-of-text and padding tokens (a causal text encoder makes
them summaries of the whole caption) and a word's share inside its object is about the object's
area share. LMD's guidance and its masks from attention would then measure noise. As TokenCompose
(CVPR 2024) does for SD, the world's exact masks supervise the maps during training:

- **token term**: each phrase token's attention, as a distribution over pixels, should lie inside
  its phrase's mask: ``(1 - in-mask share)²``;
- **pixel term**: inside the mask the phrase's tokens together should hold most of each pixel's
  attention (a binary cross-entropy of their summed probability against the mask). This is what
  takes the mass back from the padding tokens; LMD's box energy reads raw probabilities, so it
  needs it too.

Both are weighted by the signal fraction ``alpha_bar(t)``: at high noise nothing yet says where an
object will be (captions never say where), so there is nothing to localise. Inference is
untouched: the same 77 padded CLIP tokens, the same processors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


class CaptureTrainingProcessor:
    """Explicit softmax attention that keeps its probabilities (with autograd) in ``store``: a
    cross-attention's, or a self-attention's (no ``encoder_hidden_states``: the GLIGEN fusers')."""

    def __init__(self, name: str, store: dict[str, torch.Tensor]) -> None:
        self.name = name
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, None)  # (batch * heads, pixels, tokens)
        self.store[self.name] = probs.view(batch, attn.heads, *probs.shape[1:])
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        return out


def install_capture(unet) -> dict[str, torch.Tensor]:
    """Capture processors on every cross-attention (``attn2``) layer; returns their store."""
    store: dict[str, torch.Tensor] = {}
    processors = {}
    for name, proc in unet.attn_processors.items():
        layer = name.removesuffix(".processor")
        processors[name] = CaptureTrainingProcessor(layer, store) if layer.endswith("attn2") else proc
    unet.set_attn_processor(processors)
    return store


@dataclass(frozen=True)
class GroundingTargets:
    """Per batch: which tokens belong to which phrase and where each phrase's objects are."""

    token_phrase: torch.Tensor  # (B, 77, K) one-hot: token t is part of phrase k
    masks: torch.Tensor  # (B, K, S, S) float {0,1}: union of the phrase's object masks at image size
    valid: torch.Tensor  # (B, K) 1 for real phrases


def grounding_loss(
    store: dict[str, torch.Tensor], targets: GroundingTargets, signal: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean in-mask share ratio) over the captured layers.

    ``signal`` is ``alpha_bar(t)`` per sample, ``(B,)``. The share ratio (in-mask attention share /
    mask area share, averaged over phrase tokens) is the localisation figure the docs report.
    """
    losses = []
    ratios = []
    weight = signal.view(-1, 1)
    valid = targets.valid
    n_valid = valid.sum().clamp(min=1)
    for probs in store.values():
        pixels = probs.shape[2]
        side = math.isqrt(pixels)
        p = probs.mean(1)  # (B, HW, 77)
        m = F.adaptive_avg_pool2d(targets.masks, side).flatten(2)  # (B, K, HW) soft
        # token term: per phrase k, the share of each of its tokens' attention inside its mask
        inside = torch.einsum("bpt,bkp->btk", p, m)  # (B, 77, K)
        total = p.sum(1).unsqueeze(-1) + 1e-6  # (B, 77, 1)
        share = (inside / total * targets.token_phrase).sum(1)  # summed over the phrase's tokens
        n_tokens = targets.token_phrase.sum(1).clamp(min=1)  # (B, K)
        mean_share = share / n_tokens
        token_term = ((1 - inside / total) ** 2 * targets.token_phrase).sum(1) / n_tokens
        # pixel term: the phrase's summed probability per pixel against the mask
        mass = torch.einsum("bpt,btk->bkp", p, targets.token_phrase).clamp(1e-5, 1 - 1e-5)
        bce = F.binary_cross_entropy(mass, m, reduction="none").mean(-1)  # (B, K)
        per_phrase = (token_term + bce) * valid * weight
        losses.append(per_phrase.sum() / n_valid)
        area = m.mean(-1).clamp(min=1e-6)
        ratios.append(((mean_share / area) * valid).sum().detach() / n_valid)
    return torch.stack(losses).mean(), torch.stack(ratios).mean()
