"""Test-suite set-up: one torch thread per process.

The networks here are tiny; with pytest-xdist workers and zoo subprocesses sharing two cores,
torch's intra-op threads only add contention (tens of times slower on a loaded machine).
The environment variable is inherited by the rl-zoo3 subprocesses started by the tests.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch as th

th.set_num_threads(1)
