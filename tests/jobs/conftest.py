from __future__ import annotations

import itertools

import pytest

from tests.jobs.redis_server import redis_server

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture
def prefix():
    """Keys of their own for each test: no test sees another's jobs."""
    return f"lmdtest{next(_prefixes)}"
