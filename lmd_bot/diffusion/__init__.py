"""Stage 2 of LMD: the training-free layout-to-image controller on Stable Diffusion and GLIGEN.

docs/method.md ("Stage 2: the controller", "LMD+", "fast"), implemented on
diffusers' models (UNet, gated GLIGEN UNet, VAE, DDIM scheduler, attention processors) and
transformers' CLIP and SAM. Modules, from the layout down to the pixels:

- :mod:`.spec` — layout -> generation spec (prompts, phrases, negatives, seeds); no torch;
- :mod:`.tokens` — where each phrase and its head word sit in the CLIP-tokenized prompt;
- :mod:`.attention` — capturing cross-attention maps on the few layers guidance needs;
- :mod:`.losses` — the box energy and the attention-transfer loss, vectorised over a batch;
- :mod:`.guidance` — backward guidance of the latents (schedule, threshold, step size);
- :mod:`.masks` — object masks from SAM or from the attention map;
- :mod:`.latents` — initial noise, blending, quantized shifts and composition;
- :mod:`.gligen` — GLIGEN grounding inputs, the masked unconditional half, fuser scheduling;
- :mod:`.objects`, :mod:`.cache` — per-object results, placing them, and keeping them across
  rounds (the run's key; LRU by bytes in memory, optionally on disk);
- :mod:`.params` — each mode's settings, the reference's defaults;
- :mod:`.blocks` — encode, denoise, decode: what every mode is built from;
- :mod:`.object_stage` — the per-object stage: objects generated alone, batched, and masked;
- :mod:`.pipeline` — the modes as numbered steps: ``lmd``, ``lmd+``, ``fast``, plain SD;
- :mod:`.preview` — cheap progress previews straight from the latents;
- :mod:`.components`, :mod:`.loading`, :mod:`.tiny` — the model bundle and device/dtype choice,
  real checkpoints, random-weight models (tiny; full-size for GPU benchmarks);
- :mod:`.renderer` — the :class:`lmd_bot.rendering.Renderer` the bot and the CLI use.
- :mod:`.cost` — a render's compute in sd units: model calls counted, weighted by their FLOPs.

Importing this package is cheap; torch, diffusers and transformers load with the modules that
need them.
"""
