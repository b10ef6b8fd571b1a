"""Smoke runs of every benchmark script (tiny budgets) so that they cannot rot; the real runs stay out of CI."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_overhead_benchmark_smoke(tmp_path):
    run_module("benchmarks.overhead", "--quick", "--output", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    pairs = {(row["pair"], row["diagnostics"]) for row in results["rows"]}
    assert {level for _, level in pairs} == {"control", "off", "basic", "full"}
    assert len(pairs) == 12 and all(row["median_ratio_wall"] > 0 and row["median_ratio_cpu"] > 0 for row in results["rows"])
    assert results["versions"]["stable-baselines3"] != "not installed"


def test_reinforce_variance_benchmark_smoke(tmp_path):
    result = run_module("benchmarks.reinforce_variance", "--quick", "--out", str(tmp_path))
    assert list(tmp_path.glob("*.png")), result.stdout[-2000:]
