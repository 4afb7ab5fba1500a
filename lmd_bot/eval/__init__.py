"""The LMD benchmark (docs/method.md, "Benchmark"): 400 prompts in four tasks, scored on layouts
(stage 1) and on images (stage 1+2, with OWL-ViT and OWLv2), next to the published numbers.

Importing this package loads neither torch nor transformers; the detector and the renderer are
imported only by the commands that need them.
"""
