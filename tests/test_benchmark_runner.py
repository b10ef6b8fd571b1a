"""Smoke tests of the benchmark runner and of the three experiments built on it (tiny budgets; the real runs stay out of CI).

Each experiment runs in this process with ``--smoke --workers 1``; the parallel path (worker processes) and the
resume logic are tested on the runner directly.
"""

import json
import sys

import numpy as np
import pytest

from benchmarks import runner, step_size, surrogates, zoo_table


def run_main(module, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [f"{module.__name__.split('.')[-1]}.py", *args])
    module.main()


@pytest.fixture(scope="module")
def surrogates_smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_main(surrogates, monkeypatch, "--smoke", "--workers", "1", "--out", str(out))
    return out / "surrogates" / "smoke"


def test_surrogates_smoke(surrogates_smoke):
    result = json.loads((surrogates_smoke / "results.json").read_text())
    assert [row["row"] for row in result["rows"]] == [name for name, *_ in surrogates.ROWS]
    for row in result["rows"]:
        assert row["iqm_ci"][0] <= row["iqm"] <= row["iqm_ci"][1]
    assert result["seeds_used"] == [0] and result["checks"] == {}  # one seed: no interval comparison
    assert "InvertedPendulum-v5" in result["random_scores"]
    for name in ("results.md", "curves.png", "performance_profiles.png", "manifest.json"):
        assert (surrogates_smoke / name).exists(), name
    manifest = json.loads((surrogates_smoke / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m benchmarks.surrogates --smoke")
    assert manifest["versions"]["stable-baselines3"] != "not installed"
    # the paper's settings reach the runs
    run = json.loads((surrogates_smoke / "runs" / "clipping_eps_0.2-InvertedPendulum-v5-s0.json").read_text())
    assert run["spec"]["kwargs"]["clip_range"] == 0.2 and run["spec"]["normalize"]["norm_reward"] is False
    assert run["episodes"] and run["wall_time_s"] > 0


def test_report_regenerated_from_stored_runs(surrogates_smoke, monkeypatch):
    before = json.loads((surrogates_smoke / "results.json").read_text())
    for name in ("results.json", "results.md", "curves.png"):
        (surrogates_smoke / name).unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (surrogates_smoke / "runs").glob("*.json")}
    run_main(surrogates, monkeypatch, "--smoke", "--report-only", "--out", str(surrogates_smoke.parent.parent))
    assert json.loads((surrogates_smoke / "results.json").read_text()) == before
    assert (surrogates_smoke / "curves.png").exists()
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (surrogates_smoke / "runs").glob("*.json")}


def test_resume_recomputes_only_missing_runs_in_workers(tmp_path):
    specs = [
        runner.RunSpec(f"ppo-s{seed}", "ppo", "CartPole-v1", seed, 64, {"n_steps": 32, "batch_size": 32, "n_epochs": 1})
        for seed in (0, 1)
    ]
    run_dir = tmp_path / "runs"
    assert sorted(runner.run_all(specs, run_dir, workers=2)) == ["ppo-s0", "ppo-s1"]
    kept = (run_dir / "ppo-s1.json").stat().st_mtime_ns
    first = json.loads((run_dir / "ppo-s0.json").read_text())
    (run_dir / "ppo-s0.json").unlink()
    assert runner.run_all(specs, run_dir, workers=2) == ["ppo-s0"]
    assert (run_dir / "ppo-s1.json").stat().st_mtime_ns == kept
    # fixed seeds: the recomputed run has the same episodes
    assert json.loads((run_dir / "ppo-s0.json").read_text())["episodes"] == first["episodes"]
    assert runner.run_all(specs, run_dir, workers=2) == []


def test_step_size_smoke(tmp_path, monkeypatch):
    run_main(step_size, monkeypatch, "--smoke", "--workers", "1", "--out", str(tmp_path))
    out = tmp_path / "step_size" / "smoke"
    result = json.loads((out / "results.json").read_text())
    assert [row["algo"] for row in result["rows"]] == ["REINFORCE", "PPOKL", "PPOClip", "TRPOKL"]
    per_update = json.loads((out / "per_update.json").read_text())
    kl = np.array(per_update["ppo_kl-CartPole-v1-s0"]["train/policy_kl"])
    beta = np.array(per_update["ppo_kl-CartPole-v1-s0"]["train/kl_coef"])
    assert len(kl) > 2 and len(kl) == len(beta) and np.all(np.diff(kl[:, 0]) > 0)
    assert all(len(per_update[f"{algo}-CartPole-v1-s0"]["train/policy_kl"]) >= 1 for algo in step_size.ALGOS)
    assert (out / "step_size.png").exists()


def test_zoo_table_smoke(tmp_path, monkeypatch):
    run_main(zoo_table, monkeypatch, "--smoke", "--workers", "1", "--out", str(tmp_path))
    result = json.loads((tmp_path / "zoo_table" / "smoke" / "results.json").read_text())
    assert {row["key"] for row in result["rows"]} == set(zoo_table.ALGOS)
    assert all(row["commands"][0].startswith("python -m rl_zoo3.train --algo ") for row in result["rows"])
    by_key = {row["key"]: row for row in result["rows"]}
    # PPOClip / TRPOKL learn exactly the peers' parameters: same evaluation
    assert by_key["ppo_clip"]["mean"] == by_key["ppo"]["mean"]
    assert by_key["trpo_kl"]["mean"] == by_key["trpo"]["mean"]


def test_zoo_spec_follows_rl_zoo3():
    spec = runner.spec_from_zoo("x", "ppo_clip", "CartPole-v1", 0, runner.zoo_hyperparams("ppo_clip", "CartPole-v1"))
    assert spec.n_envs == 8 and spec.steps == 100_000 and spec.normalize is False
    kwargs = runner.constructor_kwargs(spec.kwargs)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3) and kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    hopper = runner.spec_from_zoo("y", "ppo", "Hopper-v5", 0, runner.zoo_hyperparams("ppo", "Hopper-v5", "Hopper-v4"))
    assert hopper.normalize == {"gamma": hopper.kwargs["gamma"]}
