"""Test-suite set-up: one torch thread per process.

The networks here are tiny; with pytest-xdist workers and zoo subprocesses sharing two cores,
torch's intra-op threads only add contention (tens of times slower on a loaded machine).
The environment variable is inherited by the rl-zoo3 subprocesses started by the tests.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch as th

th.set_num_threads(1)


@pytest.fixture(autouse=True)
def _ray_address_only_for_ray_tests(request, monkeypatch):
    """``RAY_ADDRESS`` (exported by ``.ci/run`` for tests/test_ray_runner.py) would send every benchmark command of the
    other tests to the Ray head: only the tests marked ``ray`` see it."""
    if request.node.get_closest_marker("ray") is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
