"""The benchmark runner on a Ray cluster (``--ray-address`` / ``RAY_ADDRESS``).

Marked ``ray`` (and ``integration``): a smoke suite through a real Ray head, its records compared with a local run of the
same specs. The head's address is read from ``RAY_ADDRESS`` (e.g. as printed by ``bash .ci/ray.sh``, which ``.ci/run``
exports); without a reachable head the test skips, and fails under ``CI=true``. Only tests marked ``ray`` see
``RAY_ADDRESS`` (``tests/conftest.py``): every other benchmark command of the suite runs locally.

Unmarked: the dispatch logic without a cluster (address resolution, the missing-Ray error, the record/write split,
resume, failures and the number of tasks in flight with a stand-in for the ``ray`` module).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import runner

RAY_MARK = pytest.mark.ray  # reads RAY_ADDRESS (tests/conftest.py hides it from the other tests)

# the smoke suite: a few hundred steps each, with logger records, a VecNormalize run with its evaluation, a random policy
SMOKE = [
    runner.RunSpec(
        "ppo_kl-s0",
        "ppo_kl",
        "CartPole-v1",
        0,
        256,
        {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
        record_keys=("train/policy_kl", "train/kl_coef"),
    ),
    runner.RunSpec(
        "trpo_kl-s1",
        "trpo_kl",
        "CartPole-v1",
        1,
        256,
        {"n_steps": 64, "batch_size": 64, "cg_max_steps": 5, "n_critic_updates": 2},
        normalize=True,
        eval_episodes=2,
    ),
    runner.RunSpec("random-s2", runner.RANDOM, "CartPole-v1", 2, 3),
]
VARYING = ("wall_time_s", "finished_utc")  # the only fields of a record that depend on where and when it ran


def comparable(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in VARYING}


def smoke_experiment(specs: list[runner.RunSpec]) -> runner.Experiment:
    return runner.Experiment(
        name="ray_smoke",
        doc="the Ray runner's smoke suite",
        profiles={"smoke": {}, "quick": {}},
        default_profile="quick",
        make_specs=lambda profile: specs,
        summarise=lambda runs, profile: {"episodes": {run_id: run["episodes"] for run_id, run in sorted(runs.items())}},
        write_report=lambda result, folder: f"{len(result['episodes'])} runs",
    )


# ----- a real Ray head -------------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip locally; under CI the Ray test must run, so fail."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the Ray test must run against a real head)")
    pytest.skip(reason)


@pytest.fixture
def ray_head() -> str:
    address = runner.ray_address()
    if address is None:
        unavailable(
            f"{runner.RAY_ADDRESS_VAR} is not set: no Ray head to dispatch runs to "
            f'(start one with `bash .ci/ray.sh` and export {runner.RAY_ADDRESS_VAR}="<the address it prints>")'
        )
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        unavailable(f"no Ray head reachable at {runner.RAY_ADDRESS_VAR}={address}: {type(error).__name__}: {error}")
    return address


@RAY_MARK
@pytest.mark.integration
def test_smoke_suite_on_a_ray_head_equals_a_local_run(ray_head, tmp_path, monkeypatch):
    # away from the checkout: Ray puts the driver's working directory first on the workers' path, and the workers must
    # run the code shipped to them (runner.RAY_RUNTIME_ENV), as on a node that does not share this file system
    monkeypatch.chdir(tmp_path)
    experiment = smoke_experiment(SMOKE)
    # the address from RAY_ADDRESS; an empty --ray-address runs locally whatever RAY_ADDRESS says
    runner.main(experiment, ["--smoke", "--output", str(tmp_path / "ray")])
    runner.main(experiment, ["--smoke", "--output", str(tmp_path / "local"), "--workers", "1", "--ray-address", ""])

    ray_runs, local_runs = runner.load_runs(tmp_path / "ray" / "runs"), runner.load_runs(tmp_path / "local" / "runs")
    assert sorted(ray_runs) == sorted(local_runs) == sorted(spec.run_id for spec in SMOKE)
    for run_id, record in ray_runs.items():
        assert comparable(record) == comparable(local_runs[run_id]), run_id
    assert ray_runs["ppo_kl-s0"]["episodes"] and len(ray_runs["ppo_kl-s0"]["records"]["train/policy_kl"]) >= 3
    assert len(ray_runs["trpo_kl-s1"]["eval"]["returns"]) == 2
    assert (tmp_path / "ray" / "results.json").read_text() == (tmp_path / "local" / "results.json").read_text()
    executors = [
        json.loads((tmp_path / f / "manifest.json").read_text())["invocations"][-1]["executor"] for f in ("ray", "local")
    ]
    assert executors == [f"ray@{ray_head}", "local"]


# ----- the dispatch logic, no cluster ---------------------------------------------------------------------------


def test_address_from_the_option_else_ray_address(monkeypatch):
    monkeypatch.delenv(runner.RAY_ADDRESS_VAR, raising=False)
    assert runner.ray_address() is None and runner.ray_address("10.0.0.1:6379") == "10.0.0.1:6379"
    monkeypatch.setenv(runner.RAY_ADDRESS_VAR, " 127.0.0.1:6379 ")
    assert runner.ray_address() == "127.0.0.1:6379"
    assert runner.ray_address("10.0.0.1:6379") == "10.0.0.1:6379"  # the option wins
    assert runner.ray_address("") is None  # an empty option: local, whatever RAY_ADDRESS says
    assert runner.executor(None) == "local" and runner.executor("127.0.0.1:6379") == "ray@127.0.0.1:6379"


def test_missing_ray_is_a_clear_error_before_anything_runs(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImportError, match=r"--ray-address / RAY_ADDRESS='127.0.0.1:1'.*sb3-ppo-variants\[ray\]"):
        runner.main(smoke_experiment(SMOKE), ["--smoke", "--output", str(tmp_path), "--ray-address", "127.0.0.1:1"])
    assert not any(tmp_path.iterdir())  # no manifest, no run
    with pytest.raises(ImportError, match=r"sb3-ppo-variants\[ray\]"):
        runner.run_all(SMOKE[-1:], tmp_path / "runs", ray_address="127.0.0.1:1")
    assert not any((tmp_path / "runs").iterdir())
    # nothing left to run: no Ray needed
    runner.run_one(SMOKE[-1], str(tmp_path / "runs"))
    assert runner.run_all(SMOKE[-1:], tmp_path / "runs", ray_address="127.0.0.1:1") == []


def test_record_then_write_is_run_one(tmp_path):
    spec = SMOKE[-1]
    record = runner.compute_record(spec)
    assert not any(tmp_path.iterdir())  # computing writes nothing
    assert record["spec"]["run_id"] == spec.run_id and len(record["episodes"]) == 3
    (tmp_path / "a").mkdir()
    assert runner.write_record(record, tmp_path / "a") == spec.run_id
    assert runner.run_one(spec, str(tmp_path)) == spec.run_id
    written = json.loads((tmp_path / "a" / f"{spec.run_id}.json").read_text())
    assert written == record and comparable(json.loads((tmp_path / f"{spec.run_id}.json").read_text())) == comparable(record)
    assert not list(tmp_path.glob("**/*.tmp"))


class FakeRef:
    """An object reference of the stand-in: the task's spec and function (hashable by identity, like Ray's)."""

    def __init__(self, spec: runner.RunSpec, function: Any) -> None:
        self.spec, self.function = spec, function


class FakeRay(types.ModuleType):
    """The part of the ``ray`` module the runner uses, running each task when it is submitted; records the calls."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        super().__init__("ray")
        self.fail, self.calls, self.in_flight, self.most_in_flight = fail, [], 0, 0
        self._initialized = False

    def is_initialized(self) -> bool:
        return self._initialized

    def init(self, **kwargs: Any) -> None:
        self.calls.append(("init", kwargs))
        self._initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown", {}))
        self._initialized = False

    def remote(self, **options: Any) -> Any:
        self.calls.append(("remote", options))
        fake = self

        def wrap(function: Any) -> Any:
            def submit(spec: runner.RunSpec) -> FakeRef:
                fake.in_flight += 1
                fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                return FakeRef(spec, function)

            return types.SimpleNamespace(remote=submit)

        return wrap

    def wait(self, refs: list, num_returns: int) -> tuple[list, list]:
        assert num_returns == 1
        return refs[:1], refs[1:]

    def get(self, ref: FakeRef) -> dict:
        self.in_flight -= 1
        if ref.spec.run_id in self.fail:
            raise RuntimeError(f"task of {ref.spec.run_id} failed")
        return ref.function(ref.spec)


def fake_record(spec: runner.RunSpec) -> dict:
    # the whole spec, as compute_record writes it (the runner reruns a stored run whose training differs from its spec)
    return {"spec": runner.spec_dict(spec), "episodes": [[1, float(spec.seed), 1]]}


def test_ray_dispatch_writes_records_here_resumes_and_collects_failures(monkeypatch, tmp_path):
    specs = [replace(SMOKE[-1], run_id=f"random-s{seed}", seed=seed) for seed in range(5)]
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    runner.write_record(fake_record(specs[0]), run_dir)  # already done: skipped
    fake = FakeRay(fail=("random-s3",))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(runner, "compute_record", fake_record)
    with pytest.raises(RuntimeError, match=r"(?s)failed runs:\nrandom-s3:\n.*task of random-s3 failed"):
        runner.run_all(specs, run_dir, workers=2, ray_address="127.0.0.1:6379")
    assert sorted(path.stem for path in run_dir.glob("*.json")) == ["random-s0", "random-s1", "random-s2", "random-s4"]
    assert json.loads((run_dir / "random-s4.json").read_text())["episodes"] == [[1, 4.0, 1]]
    assert fake.most_in_flight == 2  # --workers caps the tasks in flight
    init = fake.calls[0]
    assert init[0] == "init" and init[1]["address"] == "127.0.0.1:6379" and init[1]["runtime_env"] == runner.RAY_RUNTIME_ENV
    assert ("remote", {"num_cpus": 1}) in fake.calls and fake.calls[-1][0] == "shutdown"
    # the shipped code: this package and the benchmarks, without the stored results; one torch thread
    shipped = [Path(path).name for path in runner.RAY_RUNTIME_ENV["py_modules"]]
    assert shipped == ["benchmarks", "sb3_ppo_variants"] and runner.RAY_RUNTIME_ENV["env_vars"] == {"OMP_NUM_THREADS": "1"}

    # resume: only the failed run again, all in flight by default, on the connection of a caller that initialised Ray
    fake = FakeRay()
    fake._initialized = True
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert runner.run_all(specs, run_dir, ray_address="127.0.0.1:6379") == ["random-s3"]
    assert [name for name, _ in fake.calls] == ["remote"]  # neither init nor shutdown: the caller's connection
    assert runner.run_all(specs, run_dir, ray_address="127.0.0.1:6379") == []
