"""Smoke runs of the benchmark scripts' command lines (tiny budgets) so that they cannot rot; the real runs stay out of CI."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_main

pytestmark = pytest.mark.integration  # every test starts a benchmark script

ROOT = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def report_only(module: str, *args: str) -> None:
    """``python -m benchmarks.<module> --report-only ...``, in this process (it reads results.json, trains nothing)"""
    run_main(importlib.import_module(f"benchmarks.{module}"), "--report-only", *args)


def test_overhead_benchmark_smoke(tmp_path):
    run_module("benchmarks.overhead", "--smoke", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    pairs = {(row["pair"], row["diagnostics"]) for row in results["rows"]}
    assert {level for _, level in pairs} == {"control", "off", "basic", "full"}
    assert len(pairs) == 12 and all(row["median_ratio_wall"] > 0 and row["median_ratio_cpu"] > 0 for row in results["rows"])
    assert results["versions"]["stable-baselines3"] != "not installed"
    assert results["command"] == f"python -m benchmarks.overhead --smoke --output {tmp_path}"
    # --report-only: the same report from results.json
    report = (tmp_path / "results.md").read_text()
    (tmp_path / "results.md").unlink()
    report_only("overhead", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == report


def test_speed_benchmark_smoke(tmp_path):
    from benchmarks import speed

    run_module("benchmarks.speed", "--smoke", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == f"python -m benchmarks.speed --smoke --output {tmp_path}"
    rows = {row["row"]: row for row in results["rows"]}
    models = [label for label in speed.MODELS if label != speed.SBX]
    floors = [speed.RAW, "floor: 8 envs, Monitor, DummyVecEnv", "floor: 2 envs, Monitor, DummyVecEnv"]
    # SBX: measured where it is installed, else a note says why not
    assert list(rows) == [*models, *floors] or list(rows) == [*models, speed.SBX, *floors]
    assert (speed.SBX in rows) != any(note.startswith(speed.SBX) for note in results["notes"])
    for label, row in rows.items():
        assert all(row["steps_per_s"][clock]["median"] > 0 for clock in ("cpu", "wall")), label
        has_peers = bool(speed.MODELS.get(label, ("", ()))[1])
        assert ("ratio" in row) == has_peers and ("floor_ratio" in row) == has_peers, label
        assert ("floor_fraction" in row) == (label in speed.MODELS), label
    assert rows["PPOClip"]["peers"] == [speed.REFERENCE, speed.CONTROL] and rows["TRPOKL"]["peers"] == [speed.TRPO]
    assert rows["TRPOKL"]["floor"] == "floor: 2 envs, Monitor, DummyVecEnv"
    assert 0 < rows["PPOKL"]["floor_fraction"]["cpu"]["median"] < 1
    assert (tmp_path / "speed.png").exists()
    # --report-only: the same report from results.json
    report = (tmp_path / "results.md").read_text()
    (tmp_path / "results.md").unlink()
    report_only("speed", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == report


def test_reinforce_variance_benchmark_smoke(tmp_path):
    result = run_module("benchmarks.reinforce_variance", "--smoke", "--workers", "1", "--output", str(tmp_path))
    assert (tmp_path / "reinforce_variance.png").exists(), result.stdout[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["snapshots"]) == [
        "CartPole-v1/initial",
        "CartPole-v1/trained_8k",
        "Pendulum-v1/initial",
        "Pendulum-v1/trained_8k",
    ]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [
        "CartPole-v1-carry-over-s0.json",
        "CartPole-v1-s0.json",
        "Pendulum-v1-s0.json",
    ]
    assert "none > mean [rtg]" in result.stdout and "time < value [rtg]" in result.stdout
    # the carry-over run: the bias of each off_policy_correction, with its figure
    carry = results["carry_over"]["CartPole-v1"]
    assert [row["correction"] for row in carry["options"]] == ["none", "importance", "sync"]
    assert all(np.isfinite(row["bias_sq_se"]) for row in carry["options"])
    assert (tmp_path / "carry_over.png").exists() and "carry-over CartPole-v1" in result.stdout


def test_fine_tuning_benchmark_smoke(tmp_path):
    from benchmarks import fine_tuning

    run_module("benchmarks.fine_tuning", "--smoke", "--workers", "1", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    smoke = fine_tuning.PROFILES["smoke"]
    rows = {(row["part"], row["setting"]): row for row in results["rows"]}
    assert list(rows) == [("forgetting", s) for s in smoke["forgetting"]] + [("bc_to_rl", s) for s in smoke["bc_to_rl"]]
    # the source policies (the expert, its clone) were trained once and cached beside the runs
    models = sorted(path.name for path in (tmp_path / "runs" / "models").glob("*.zip"))
    assert models == ["bc-s0-1024-100-2.zip", "expert-s0-1024.zip"]
    for (_, setting), row in rows.items():
        evals = row["per_seed"][0]
        assert evals["start_original_task"] > 0 and evals["final_new_task"] > 0, setting
        # the KL to the reference is measured whenever there is one (also with beta = 0), never without
        assert ("final_ref_kl" in row) == (setting != "scratch"), setting
    assert rows[("forgetting", "beta=0")]["final_ref_kl_coef"] == 0.0
    assert len(rows[("forgetting", "proportional 0.05")]["second_half_ref_kl_over_target"]) == 1
    assert (tmp_path / "fine_tuning.png").exists() and (tmp_path / "bc_to_rl.png").exists()
    # --report-only: the same report from results.json
    report = (tmp_path / "results.md").read_text()
    (tmp_path / "results.md").unlink()
    report_only("fine_tuning", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == report


def test_step_size_sensitivity_benchmark_smoke(tmp_path):
    from benchmarks import step_size_sensitivity as experiment

    run_module("benchmarks.step_size_sensitivity", "--smoke", "--workers", "1", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    # the largest value of each knob's grid, for every algorithm on both tasks; TRPOKL's knob is its KL bound
    cells = {(row["env"], row["algo"], row["knob"], row["value"]) for row in results["rows"]}
    assert len(cells) == 2 * 4 and {env for env, *_ in cells} == set(experiment.ENVS)
    assert {value for *_, value in cells} == {experiment.LEARNING_RATES[-1], experiment.TARGET_KLS[-1]}
    assert {knob for _, algo, knob, _ in cells if algo == "trpo_kl"} == {"target_kl"}
    assert all(row["updates"][0] >= 1 and row["median_policy_kl"][0] > 0 for row in results["rows"])
    assert (tmp_path / "step_size_sensitivity.png").exists()
    # resume: a second invocation runs nothing and writes the same report
    report = (tmp_path / "results.md").read_text()
    result = run_module("benchmarks.step_size_sensitivity", "--smoke", "--workers", "1", "--output", str(tmp_path))
    assert "8/8" in result.stderr and (tmp_path / "results.md").read_text() == report


def test_tutorial_pendulum_benchmark_smoke(tmp_path):
    from benchmarks import tutorial_pendulum as experiment

    run_module("benchmarks.tutorial_pendulum", "--smoke", "--workers", "1", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["row"] for row in results["rows"]] == [row for row, _, _ in experiment.ROWS]
    # one iteration of 2200 steps: 11 whole episodes
    assert all(row["iterations"] == [1] for row in results["rows"][:-1])
    runs = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "runs").iterdir()}
    tutorial = runs["tutorial_PPOClip-s0"]
    assert len(tutorial["episodes"]) == 11 and {episode[2] for episode in tutorial["episodes"]} == {200}
    assert (tmp_path / "tutorial_pendulum.png").exists()
    report = (tmp_path / "results.md").read_text()
    assert "-76.99" in report
    # the recorded diagnostics: KL statistics for both tutorial rows, beta's for PPOKL's alone
    rows = {row["row"]: row for row in results["rows"]}
    assert all(len(rows[row]["policy_kl_median"]) == 1 for row in ("tutorial (PPOClip)", "tutorial (PPOKL)"))
    assert "kl_coef_median" in rows["tutorial (PPOKL)"] and "kl_coef_median" not in rows["tutorial (PPOClip)"]
    assert "Diagnostics, per update" in report and "| row | policy_kl_median |" in report
    (tmp_path / "results.md").unlink()
    report_only("tutorial_pendulum", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == report


def test_kl_vs_clip_benchmark_smoke(tmp_path):
    from benchmarks import kl_vs_clip as experiment

    run_module("benchmarks.kl_vs_clip", "--smoke", "--workers", "1", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    rows = {row["row"]: row for row in results["rows"]}
    assert list(rows) == list(experiment.ROWS) and set(results["check"]) >= {"within_one_std", "paper_within_one_std"}
    # the shipped entries, as rl_zoo3.train builds them (the smoke profile shortens n_steps only)
    runs = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "runs").iterdir()}
    kl, clip = runs["ppo_kl-HalfCheetah-v5-s0"], runs["ppo_clip-HalfCheetah-v5-s0"]
    assert clip["spec"]["kwargs"]["clip_range"] == 0.1 and clip["spec"]["normalize"] == {"gamma": 0.98}
    # PPOKL's: PPOClip's entry, its clip_range replaced by the adaptive penalty
    assert "clip_range" not in kl["spec"]["kwargs"] and kl["spec"]["n_envs"] == 1
    assert {key: kl["spec"]["kwargs"][key] for key in ("kl_target", "kl_controller")} == {
        "kl_target": 0.01,
        "kl_controller": "adaptive",
    }
    assert {key: value for key, value in kl["spec"]["kwargs"].items() if not key.startswith("kl_")} == {
        key: value for key, value in clip["spec"]["kwargs"].items() if key != "clip_range"
    }
    assert kl["spec"]["normalize"] == clip["spec"]["normalize"]
    # the paper's settings, its previous entry, with the -conf command
    paper = runs[f"{experiment.PAPER}-HalfCheetah-v5-s0"]["spec"]
    assert paper["algo"] == "ppo_kl" and paper["kwargs"]["learning_rate"] == 3e-4 and paper["kwargs"]["n_epochs"] == 10
    assert paper["kwargs"]["kl_target"] == 0.01 and paper["normalize"] == {"gamma": 0.99}
    assert "-conf benchmarks/kl_vs_clip_paper.py" in paper["labels"]["command"]
    # the diagnostics once per update: kl_coef only for PPOKL, clip_fraction only for PPOClip
    assert len(kl["records"]["train/kl_coef"]) == 8 and kl["records"]["train/clip_fraction"] == []
    assert len(clip["records"]["train/clip_fraction"]) == 8 and clip["records"]["train/kl_coef"] == []
    assert "train/kl_coef" in rows["ppo_kl"]["diagnostics"] and "train/kl_coef" not in rows["ppo_clip"]["diagnostics"]
    assert all(len(stats["pooled"]) == 3 for row in rows.values() for stats in row["diagnostics"].values())
    assert (tmp_path / "kl_vs_clip.png").exists()
    report = (tmp_path / "results.md").read_text()
    assert "Acceptance check: PPOKL's mean final return" in report
    # --report-only: the same report from results.json
    (tmp_path / "results.md").unlink()
    report_only("kl_vs_clip", "--smoke", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == report
