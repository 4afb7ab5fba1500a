"""``lmd-bot bench queue``: arguments it cannot measure with are refused in one line."""

from __future__ import annotations

import pytest

from lmd_bot.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["--jobs", "0"],
        ["--users", "0"],
        ["--samples", "1"],  # a percentile needs two
        ["--workers", "0"],  # the Redis burst would wait for ever
    ],
)
def test_bench_queue_refuses_what_it_cannot_measure(argv, capsys):
    """They were a StatisticsError traceback after the in-process run (or a Redis run that
    never ends)."""
    assert main(["bench", "queue", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --jobs, --users and --workers must be at least 1, --samples at least 2"]
