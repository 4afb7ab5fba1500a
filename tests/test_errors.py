"""Recognising out-of-memory errors: one function, used by the controller and the worker."""

from __future__ import annotations

import torch

from lmd_bot.errors import OutOfMemoryError, RenderError, is_out_of_memory


def test_out_of_memory_is_recognised_in_every_form_the_stack_raises():
    assert is_out_of_memory(OutOfMemoryError("ours"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))


def test_other_errors_are_not_out_of_memory():
    assert not is_out_of_memory(RenderError("render failed"))
    assert not is_out_of_memory(RuntimeError("expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors say it in words
