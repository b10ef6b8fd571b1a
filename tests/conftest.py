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


def pytest_collection_modifyitems(config, items):
    """
    The longest tests first: the learning checks that start rl-zoo3 (``slow`` and ``integration``), the other learning
    checks, the other subprocess tests, then the unit tests (collection order within each group). With pytest-xdist
    handing out one test at a time (``--maxschedchunk 1`` in the Makefile), the two workers then finish together
    instead of one running the zoo's learning checks alone at the end.
    """

    def group(item: pytest.Item) -> int:
        slow, integration = item.get_closest_marker("slow") is not None, item.get_closest_marker("integration") is not None
        return 0 if slow and integration else 1 if slow else 2 if integration else 3

    items[:] = sorted(items, key=group)  # stable: the collection order within a group
