"""Tiny random-weight components shared by the diffusion tests (built once per session)."""

import pytest
import torch

from lmd_bot.diffusion.tiny import clip_tokenizer, tiny_components


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    # The suite runs on 2 cores; more threads than cores only adds contention.
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="session")
def components():
    return tiny_components(seed=0)


@pytest.fixture(scope="session")
def components_no_sam():
    return tiny_components(seed=0, sam=False)
