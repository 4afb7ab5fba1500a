"""Test-wide settings: no model hub, ever; every test runs offline on the CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One OpenMP thread per process. The tiny models gain nothing from more, and on a 2-core machine
# torch's spinning OpenMP threads fight any other busy process (a worker process of the bot tests,
# a second test run): a 2-step tiny render measured 7.6 s with one thread and 88 s with two under
# a load of 1. Set before torch is imported; worker processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
