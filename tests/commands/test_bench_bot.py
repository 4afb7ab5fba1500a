"""``lmd-bot bench bot`` runs and reports its figures (no pass/fail on speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_bench_bot_prints_events_per_second_and_latency_percentiles():
    exe = Path(sys.executable).parent / "lmd-bot"
    out = subprocess.run(
        [exe, "bench", "bot", "--users", "2", "--instructions", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "jobs rendered                  6" in out
    assert "events/s" in out and "instruction -> enqueued p50" in out and "p99" in out
