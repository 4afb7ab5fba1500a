"""Self-check: after a render, look at the image, compare it with the layout, and re-generate the
objects that came out wrong (docs/selfcheck.md).

- :mod:`.report` — what the check found and did, in a form that crosses the queue (pydantic, no
  torch), and its one-line summary for the reply;
- :mod:`.findings` — detections matched to the layout's boxes: missing, misplaced, extra and
  unwanted things (pure Python);
- :mod:`.detectors` — the checking detector (OWLv2, OWL-ViT or the shapes world's), built from the
  settings;
- :mod:`.loop` — detect, re-seed the failing objects only, re-render through the per-object
  cache, keep the best image (runs inside the GPU worker, with the renderer).
"""
