"""The benchmark runner and the experiments built on it.

Smoke runs (tiny budgets, marked ``integration``; the real runs stay out of CI): each experiment runs in this process
with ``--smoke --workers 1``; the parallel path (worker processes) and the resume logic are tested on the runner
directly. Unmarked: the reports regenerated from the committed results (``--report-only``) are the committed ones.
"""

import json
import shutil
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks import (
    common,
    kl_vs_clip,
    overhead,
    paired,
    reinforce_variance,
    runner,
    step_size,
    step_size_sensitivity,
    surrogates,
    tutorial_pendulum,
    zoo_table,
)
from sb3_ppo_variants.zoo import ZOO_ALGOS
from tests.helpers import run_main

integration = pytest.mark.integration  # trains models


@integration
def test_surrogates_smoke_and_report_from_stored_runs(tmp_path):
    run_main(surrogates, "--smoke", "--workers", "1", "--output", str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    assert [row["row"] for row in result["rows"]] == [name for name, *_ in surrogates.ROWS]
    for row in result["rows"]:
        assert row["iqm_ci"][0] <= row["iqm"] <= row["iqm_ci"][1]
    assert result["seeds_used"] == [0] and result["checks"] == {}  # one seed: no interval comparison
    assert "InvertedPendulum-v5" in result["random_scores"]
    for name in ("results.md", "curves.png", "performance_profiles.png", "manifest.json"):
        assert (tmp_path / name).exists(), name
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["command"].startswith("python -m benchmarks.surrogates --smoke")
    assert manifest["versions"]["stable-baselines3"] != "not installed"
    # the paper's settings reach the runs
    run = json.loads((tmp_path / "runs" / "clipping_eps_0.2-InvertedPendulum-v5-s0.json").read_text())
    assert run["spec"]["kwargs"]["clip_range"] == 0.2 and run["spec"]["normalize"]["norm_reward"] is False
    assert run["episodes"] and run["wall_time_s"] > 0

    # --report-only with the runs stored: results.json and the figures again, the runs untouched
    report = (tmp_path / "results.md").read_text()
    for name in ("results.json", "results.md", "curves.png"):
        (tmp_path / name).unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}
    run_main(surrogates, "--smoke", "--report-only", "--output", str(tmp_path))
    assert json.loads((tmp_path / "results.json").read_text()) == result
    assert (tmp_path / "results.md").read_text() == report and (tmp_path / "curves.png").exists()
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*.json")}


@integration
def test_surrogates_subset_of_rows_records_diagnostics_and_is_reused(tmp_path):
    # the medium profile's rows and record keys at the smoke budget, two seeds: the acceptance checks are computed
    profile = {**surrogates.PROFILES["smoke"], "seeds": [0, 1], "rows": surrogates.MEDIUM_ROWS}
    profile["record_keys"] = list(runner.DIAGNOSTIC_KEYS)
    medium, env = tmp_path / "medium", "InvertedPendulum-v5"
    runner.run_all(surrogates.make_specs(profile), medium / "runs", workers=1)
    text = runner.report(surrogates.EXPERIMENT, medium, profile)
    result = json.loads((medium / "results.json").read_text())
    assert [row["row"] for row in result["rows"]] == surrogates.MEDIUM_ROWS and result["seeds_used"] == [0, 1]
    # the best of the paper's rows present (TRPOKL is not one of them)
    assert result["best_rows"][env] in surrogates.MEDIUM_ROWS[:3] and "(3 of 11: " in result["best_how"]
    targets = ("clipping, eps = 0.2", "adaptive KL, d_targ = 0.01")
    assert set(result["checks"]) == {f"{name} ({where})" for name in targets for where in ("aggregate", env)}
    assert "With 3 of the paper's 11 rows the normaliser" in text and "`train/kl_coef`:" in text
    assert (medium / "curves.png").exists() and (medium / "performance_profiles.png").exists()
    # every row's diagnostics, once per update; a key the algorithm does not log is an empty list
    runs = runner.load_runs(medium / "runs")
    assert len(runs) == 1 + 2 * 4
    trpo, clip = runs[f"TRPOKL_target_kl_0.01-{env}-s0"], runs[f"clipping_eps_0.2-{env}-s0"]
    assert trpo["records"]["train/kl_coef"] == [] and len(trpo["records"]["train/policy_kl"]) == 2
    assert len(clip["records"]["train/clip_fraction"]) == 2 and len(clip["records"]["train/ess"]) == 2
    kl_coef = result["diagnostics"]["train/kl_coef"]
    assert (
        np.isfinite(kl_coef["adaptive KL, d_targ = 0.01"][env]).all() and np.isnan(kl_coef["clipping, eps = 0.2"][env]).all()
    )
    # the profile of every row reuses the finished runs of the subset (random policy and 4 rows of seed 0)
    full = {key: value for key, value in profile.items() if key != "rows"} | {"seeds": [0]}
    computed = runner.run_all(surrogates.make_specs(full), tmp_path / "full" / "runs", workers=1, reuse_from=[medium / "runs"])
    assert len(computed) == len(surrogates.ROWS) - 4
    reused = {run_id for run_id, run in runner.load_runs(tmp_path / "full" / "runs").items() if "reused_from" in run}
    assert reused == {f"random-{env}", *(f"{surrogates.slug(name)}-{env}-s0" for name in surrogates.MEDIUM_ROWS)}


def test_surrogates_diagnostics_leave_nan_updates_out_of_the_median_and_say_how_many():
    def run(row: str, seed: int, values: list[float]) -> dict:
        spec = {"labels": {"row": row}, "env_id": "E", "seed": seed}
        return {"spec": spec, "records": {"train/ess": [[i, v] for i, v in enumerate(values)]}}

    runs = {
        "a0": run("a", 0, [0.1, float("nan"), 0.3, 0.5]),  # median of the finite 0.3; NaN on 1/4
        "a1": run("a", 1, [0.2, 0.4, 0.6]),
        "b0": run("b", 0, [0.9, 1.0]),
        "c0": run("c", 0, [1.0, float("inf"), float("inf")]),  # an overflowed ratio_max is a value, not a gap
        "c1": run("c", 1, [float("inf")]),
        "b1": run("b", 1, []),  # not logged
    }
    env_seeds = {"E": [0, 1]}
    table = surrogates.diagnostics(runs, ["a", "b", "c"], env_seeds)
    nan = surrogates.diagnostics(runs, ["a", "b", "c"], env_seeds, surrogates.nan_fraction)
    assert table["train/ess"]["a"]["E"] == [0.3, 0.4] and nan["train/ess"]["a"]["E"] == [0.25, 0.0]
    assert table["train/ess"]["b"]["E"][0] == 0.95 and np.isnan(table["train/ess"]["b"]["E"][1])
    lines = surrogates.diagnostics_markdown(table, ["E"], nan)
    assert "| a | 0.35 (NaN on 25%) |" in lines and "| b | 0.95 |" in lines and "| c | inf |" in lines


def test_a_stored_run_of_other_settings_is_set_aside_and_run_again(tmp_path):
    # the tune-then-verify route: an entry edited after its cell ran must not keep the old run's result
    def spec(n_steps: int, row: str = "x") -> runner.RunSpec:
        return runner.RunSpec("r", "ppo_kl", "CartPole-v1", 0, 64, {"n_steps": n_steps, "batch_size": 32}, labels={"row": row})

    runs = tmp_path / "runs"
    assert runner.run_all([spec(32)], runs, workers=1) == ["r"]
    first = (runs / "r.json").read_text()
    # labels (and record keys) change nothing in the training: kept
    assert runner.run_all([spec(32, row="renamed")], runs, workers=1) == [] and (runs / "r.json").read_text() == first
    # another training under the same id: the stored run is set aside (nothing deleted) and the run made again
    assert runner.run_all([spec(64)], runs, workers=1) == ["r"]
    assert json.loads((runs / "r.json").read_text())["spec"]["kwargs"]["n_steps"] == 64
    (aside,) = (runs / "stale").glob("r.*.json")
    assert aside.read_text() == first
    # set aside before reuse: an identical finished run of another experiment is copied, not run again
    other = tmp_path / "other"
    assert runner.run_all([spec(96)], other, workers=1) == ["r"]
    assert runner.run_all([spec(96)], runs, workers=1, reuse_from=[other]) == []
    assert json.loads((runs / "r.json").read_text())["reused_from"] == str(other / "r.json")
    assert len(list((runs / "stale").glob("r.*.json"))) == 2


def test_reuse_records_copies_only_identical_finished_runs(tmp_path):
    def spec(run_id: str, keys: tuple[str, ...] = ("train/policy_kl",), row: str = "x", n_steps: int = 64) -> runner.RunSpec:
        return runner.RunSpec(
            run_id, "ppo_kl", "CartPole-v1", 0, 640, {"n_steps": n_steps}, record_keys=keys, labels={"row": row}
        )

    def store(folder, stored: runner.RunSpec) -> None:
        folder.mkdir(exist_ok=True)
        records = {key: [[64, 0.5]] for key in stored.record_keys}
        runner.write_record(
            {"spec": runner.spec_dict(stored), "wall_time_s": 1.0, "episodes": [[9, 9.0, 9]], "records": records}, folder
        )

    source, other, target = tmp_path / "source", tmp_path / "other", tmp_path / "runs"
    store(source, spec("a", keys=("train/policy_kl", "train/std"), row="other label"))  # more keys, other labels: reusable
    store(source, spec("b", n_steps=128))  # another run under the same id
    store(other, spec("b"))  # ... and the identical one in the next folder
    store(source, spec("c", keys=()))  # the wanted key not recorded
    store(source, spec("d"))
    store(target, spec("d", row="done"))  # already finished here: left as it is
    wanted = [spec(run_id) for run_id in "abcde"]
    assert runner.reuse_records(wanted, target, [source, other, tmp_path / "missing", target]) == ["a", "b"]
    a = json.loads((target / "a.json").read_text())
    # the copy carries this experiment's spec, every key recorded, the episodes, and where it came from
    assert a["spec"] == runner.spec_dict(wanted[0]) and a["reused_from"] == str(source / "a.json")
    assert a["records"] == {"train/policy_kl": [[64, 0.5]], "train/std": [[64, 0.5]]} and a["episodes"] == [[9, 9.0, 9]]
    assert json.loads((target / "b.json").read_text())["reused_from"] == str(other / "b.json")
    assert not (target / "c.json").exists() and not (target / "e.json").exists()
    assert json.loads((target / "d.json").read_text())["spec"]["labels"] == {"row": "done"}
    assert runner.reuse_records(wanted, target, [source, other]) == []


def test_profiles_that_share_runs_have_identical_specs():
    # surrogates: the medium runs are the full profile's seeds 0 and 1 of four rows, the same specs (record keys too)
    medium = {spec.run_id: spec for spec in surrogates.make_specs(surrogates.PROFILES["medium"])}
    full = {spec.run_id: spec for spec in surrogates.make_specs(surrogates.PROFILES["full"])}
    assert len(medium) == 7 + 7 * 2 * 4 and set(medium) < set(full)
    assert all(runner.spec_dict(spec) == runner.spec_dict(full[run_id]) for run_id, spec in medium.items())
    assert {tuple(spec.record_keys) for spec in medium.values() if spec.algo != runner.RANDOM} == {runner.DIAGNOSTIC_KEYS}
    assert surrogates.PROFILES["medium"]["reuse"] == ["surrogates/full"]
    assert surrogates.PROFILES["full"]["reuse"] == ["surrogates/medium"]
    # kl_vs_clip's runs are zoo_table full's PPOKL / PPOClip runs on HalfCheetah-v5 (labels aside), either way round
    zoo = {spec.run_id: spec for spec in zoo_table.make_specs(zoo_table.PROFILES["full"])}
    shared = 0
    for spec in kl_vs_clip.make_specs(kl_vs_clip.PROFILES["quick"]):
        if spec.labels.get("row") == kl_vs_clip.PAPER or spec.seed not in zoo_table.PROFILES["full"]["seeds"]:
            continue  # not a shipped entry, or a seed the zoo table does not run: kl_vs_clip's own
        shared += 1
        ours, theirs = runner.spec_dict(spec), runner.spec_dict(zoo[spec.run_id])
        assert runner.reusable(ours, {"spec": theirs}) and runner.reusable(theirs, {"spec": ours}), spec.run_id
    assert shared == 4
    assert kl_vs_clip.PROFILES["quick"]["reuse"] == ["zoo_table/full"] and zoo_table.PROFILES["full"]["reuse"] == [
        "kl_vs_clip/quick"
    ]


@integration
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


@integration
def test_step_size_smoke(tmp_path):
    run_main(step_size, "--smoke", "--workers", "1", "--output", str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    assert [row["algo"] for row in result["rows"]] == ["REINFORCE", "PPOKL", "PPOClip", "TRPOKL"]
    per_update = json.loads((tmp_path / "per_update.json").read_text())
    kl = np.array(per_update["ppo_kl-CartPole-v1-s0"]["train/policy_kl"])
    beta = np.array(per_update["ppo_kl-CartPole-v1-s0"]["train/kl_coef"])
    assert len(kl) > 2 and len(kl) == len(beta) and np.all(np.diff(kl[:, 0]) > 0)
    assert all(len(per_update[f"{algo}-CartPole-v1-s0"]["train/policy_kl"]) >= 1 for algo in step_size.ALGOS)
    assert (tmp_path / "step_size.png").exists()


@integration
def test_zoo_table_smoke(tmp_path):
    run_main(zoo_table, "--smoke", "--workers", "1", "--output", str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    assert {row["key"] for row in result["rows"]} == set(zoo_table.ALGOS)
    assert all(row["commands"][0].startswith("python -m rl_zoo3.train --algo ") for row in result["rows"])
    by_key = {row["key"]: row for row in result["rows"]}
    # PPOClip / TRPOKL learn exactly the peers' parameters: same evaluation
    assert by_key["ppo_clip"]["mean"] == by_key["ppo"]["mean"]
    assert by_key["trpo_kl"]["mean"] == by_key["trpo"]["mean"]


def test_zoo_table_full_profile_runs_every_entry_of_our_files_and_the_peers_apart():
    entries = {algo: set(common.zoo_entries(algo)) - {"default"} for algo in ZOO_ALGOS}
    assert set(zoo_table.FULL_ENVS) == set().union(*entries.values()) and zoo_table.FULL_ENVS[:6] == zoo_table.ENVS
    full = zoo_table.make_specs(zoo_table.PROFILES["full"])
    # each of ours exactly where its own file has an entry (no fall-back to `default`), at the entry's budget, 2 seeds
    for algo in ZOO_ALGOS:
        assert {spec.env_id for spec in full if spec.algo == algo} == entries[algo], algo
    assert {spec.seed for spec in full} == {0, 1} and all(spec.steps == spec.labels["zoo_steps"] for spec in full)
    assert len(full) == 2 * sum(map(len, entries.values())) and {spec.algo for spec in full} == set(ZOO_ALGOS)
    # the peers: a profile of their own, their rl-zoo3 entries where there is one (older ids for the v5 tasks)
    peers = {(spec.algo, spec.env_id): spec.labels for spec in zoo_table.make_specs(zoo_table.PROFILES["full-peers"])}
    assert {algo for algo, _ in peers} == set(runner.PEERS)
    assert (
        peers["ppo", "HalfCheetah-v5"]["entry"] == "HalfCheetah-v4" and peers["ppo", "CartPole-v1"]["entry"] == "CartPole-v1"
    )
    assert peers["ppo", "Reacher-v5"]["note"] == "v2 entry run on the v5 task; the v2 id needs mujoco-py"
    assert ("a2c", "Reacher-v5") not in peers and ("trpo", "InvertedPendulum-v5") not in peers
    # quick is as it was: all seven algorithms on its six environments (ours on their file's default where no entry)
    quick = zoo_table.make_specs(zoo_table.PROFILES["quick"])
    assert len(quick) == 7 * 6 * 2 and {spec.env_id for spec in quick} == set(zoo_table.ENVS)
    hopper = {spec.algo: spec.labels for spec in quick if spec.env_id == "Hopper-v5" and spec.seed == 0}
    assert hopper["reinforce"]["entry"] == "Hopper-v5" and hopper["trpo"]["note"] == "v4 entry run on the v5 task"


def test_zoo_table_verdict_is_one_sided_on_the_published_std():
    assert zoo_table.verdict(-60.0, (-50.0, 10.0, "1M")) == {
        "published": [-50.0, 10.0, "1M"],
        "shortfall": 10.0,
        "within_one_std": True,
    }
    assert zoo_table.verdict(-60.5, (-50.0, 10.0, "1M"))["within_one_std"] is False
    assert zoo_table.verdict(9e9, (500.0, 0.0, "100k"))["within_one_std"] is True  # above the number: within
    assert zoo_table.verdict(1.0, None) == {"published": None, "shortfall": None, "within_one_std": None}
    assert [zoo_table.budget_text(steps) for steps in (1_000_000, 3_000_000, 500_000, 2_048)] == ["1M", "3M", "500k", "2.048k"]


def test_zoo_table_full_report_from_synthetic_runs(tmp_path):
    """The full profile's report on made-up evaluations (no training): verdicts, missing numbers and entries, seeds."""
    profile = {**zoo_table.PROFILES["full"], "envs": ["CartPole-v1", "Pendulum-v1", "Reacher-v5"], "reuse": []}
    evals = {"reinforce": [500.0], "ppo_kl": [-250.0, -290.0], "ppo_clip": [500.0, 500.0], "trpo_kl": [480.0, 470.0]}
    (tmp_path / "runs").mkdir()
    for spec in zoo_table.make_specs(profile):
        if spec.seed < len(evals[spec.algo]):  # REINFORCE: seed 1 not finished
            evaluation = {"mean": evals[spec.algo][spec.seed]}
            runner.write_record({"spec": runner.spec_dict(spec), "wall_time_s": 1.0, "eval": evaluation}, tmp_path / "runs")
    text = runner.report(zoo_table.EXPERIMENT, tmp_path, profile)
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {(row["key"], row["env"]): row for row in result["rows"]}
    assert result["not_run"] == [["reinforce", "Reacher-v5"]] and ("reinforce", "Reacher-v5") not in rows
    assert rows["trpo_kl", "CartPole-v1"]["peer"] == "trpo" and rows["reinforce", "CartPole-v1"]["peer"] == "a2c"
    lines = {tuple(line.split(" | ")[:2]): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| TRPOKL", "CartPole-v1"].endswith(
        "| 475.0 ± 5.0 | TRPO (sb3-contrib) | 500.0 ± 0.0 @ 100k | short by 25.0 (> 1 std) |"
    )
    assert lines["| PPOKL", "Pendulum-v1"].endswith("| PPO (SB3) | -172.2 ± 104.2 @ 100k | within 1 std of the peer |")
    assert lines["| PPOClip", "Reacher-v5"].endswith("| no published number | no published number |")
    assert lines["| REINFORCE", "CartPole-v1"].endswith("| within 1 std of the peer; incomplete: seeds [1] missing |")
    assert "| REINFORCE | Pendulum-v1 | 1M | [0] | " in text
    assert "REINFORCE with A2C (SB3); PPOKL and PPOClip with PPO (SB3); TRPOKL with TRPO (sb3-contrib)" in text
    assert "short: PPOKL / CartPole-v1 (by 770.0), TRPOKL / CartPole-v1 (by 25.0); no published number: 3." in text
    assert "Not run (the algorithm's file has no entry for the environment): REINFORCE / Reacher-v5." in text
    # --report-only from results.json alone (the committed form) writes the same report
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "results.md").unlink()
    run_main(zoo_table, "--profile", "full", "--report-only", "--output", str(tmp_path))
    assert (tmp_path / "results.md").read_text() == text + "\n"


def test_zoo_spec_follows_rl_zoo3():
    spec = runner.spec_from_zoo("x", "ppo_clip", "CartPole-v1", 0, common.zoo_entry("ppo_clip", "CartPole-v1"))
    assert spec.n_envs == 8 and spec.steps == 100_000 and spec.normalize is False
    kwargs = common.zoo_kwargs(spec.kwargs)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3) and kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert common.zoo_kwargs(spec.kwargs, constant_schedules=True)["learning_rate"] == pytest.approx(1e-3)
    hopper = runner.spec_from_zoo("y", "ppo", "Hopper-v5", 0, common.zoo_entry("ppo", "Hopper-v5", "Hopper-v4"))
    assert hopper.normalize == {"gamma": hopper.kwargs["gamma"]}
    assert isinstance(common.zoo_kwargs(hopper.kwargs)["policy_kwargs"], dict)
    # our keys fall back to the file's default entry
    assert common.zoo_entry("ppo_kl", "MountainCar-v0") == {"n_timesteps": 1e6, "policy": "MlpPolicy"}
    # `normalize: true` without a gamma: VecNormalize with its defaults, as rl_zoo3.train builds it
    acrobot = runner.spec_from_zoo("z", "a2c", "Acrobot-v1", 0, common.zoo_entry("a2c", "Acrobot-v1"))
    assert acrobot.normalize == {} and runner.normalized(acrobot)
    assert isinstance(runner.make_env(acrobot), VecNormalize) and not runner.normalized(spec)


def test_paired_ratios_and_summaries():
    clocks = {label: paired.Clock() for label in ("a", "b", "c")}
    for clock, steps, seconds in zip(clocks.values(), (100, 100, 300), ([1.0, 2.0], [3.0, 2.0], [2.0, 2.0]), strict=True):
        clock.steps, clock.seconds = steps, np.array(seconds)
    # a against b and c taken together: 100 steps in (1, 2) s against 400 steps in (5, 4) s
    np.testing.assert_allclose(paired.throughput_ratio(clocks, "a", ["b", "c"]), [100 / 1 / (400 / 5), 100 / 2 / (400 / 4)])
    orders = {tuple(paired.shuffled(["a", "b", "c"], rep)) for rep in range(20)}
    assert all(sorted(order) == ["a", "b", "c"] for order in orders) and len(orders) > 3
    assert paired.shuffled(["a", "b", "c"], 4) == paired.shuffled(["a", "b", "c"], 4)
    assert paired.summary([1.0, 2.0, 3.0, 4.0]) == (2.5, [1.75, 3.25], [1.0, 2.0, 3.0, 4.0])
    summaries = paired.clock_summaries([np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    assert list(summaries) == list(paired.CLOCKS) and summaries["cpu"] == (3.0, [2.5, 3.5], [2.0, 4.0])


def test_a_rerun_of_one_environment_replaces_only_its_rows():
    def result(command: str, rows: list[tuple[str, str]], repetitions: int = 8) -> dict:
        rows_ = [{"env": env, "row": row} for env, row in rows]
        return {"command": command, "repetitions": repetitions, "rounds": 4, "notes": [], "rows": rows_}

    previous = result("all", [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y")])
    merged = paired.merge_environments(previous, result("only A", [("A", "x2"), ("A", "y2")]), ["A"])
    assert [(row["env"], row["row"]) for row in merged["rows"]] == [("A", "x2"), ("A", "y2"), ("B", "x"), ("B", "y")]
    assert merged["commands"] == {"A": "only A", "B": "all"}
    assert paired.commands_text(merged) == "Commands: A: `only A`; B: `all`"
    # again, for B: both now measured by their own commands, the order of the environments kept
    merged = paired.merge_environments(merged, result("only B", [("B", "x3")]), ["B"])
    assert [row["row"] for row in merged["rows"]] == ["x2", "y2", "x3"] and merged["commands"] == {
        "A": "only A",
        "B": "only B",
    }
    # another protocol: nothing is merged
    other = result("A, 2 repetitions", [("A", "z")], repetitions=2)
    assert paired.merge_environments(previous, other, ["A"]) == other
    assert paired.commands_text(previous) == "Command: `all`"
    # repetitions counted by environment: each environment keeps its own
    previous = {**result("all", [("A", "x"), ("B", "x")]), "repetitions": {"A": 16, "B": 8}}
    merged = paired.merge_environments(previous, {**result("A", [("A", "x4")]), "repetitions": {"A": 12}}, ["A"])
    assert merged["repetitions"] == {"A": 12, "B": 8} and [row["row"] for row in merged["rows"]] == ["x4", "x"]


class _Recorder:
    def __init__(self, label: str, log: list[str]) -> None:
        self.label, self.log = label, log

    def advance(self, clock: paired.Clock) -> None:
        self.log.append(self.label)

    def close(self) -> None:
        pass


def test_paired_rounds_draw_a_turn_order_per_round():
    log: list[str] = []
    labels = [str(i) for i in range(5)]
    # (few rounds: each starts with a full garbage collection, slow in a test process holding many models)
    clocks = paired.run_rounds({label: _Recorder(label, log) for label in labels}, rounds=12, units={"0": 2})
    assert list(clocks) == labels
    assert log[:5] == labels  # the untimed advance, in order
    rounds = [log[5 + 6 * r : 5 + 6 * (r + 1)] for r in range(12)]
    assert all(sorted(set(turns)) == labels and turns.count("0") == 2 for turns in rounds)
    # no contestant always follows the same one (a rotation would put "1" right after "0" in 4 rounds out of 5)
    followers = {turns[turns.index("0") + 2] for turns in rounds if turns.index("0") < 4}
    assert len(followers) > 2
    # seeded: the same orders again
    again: list[str] = []
    paired.run_rounds({label: _Recorder(label, again) for label in labels}, rounds=12, units={"0": 2})
    assert again == log


def test_paired_models_draw_from_streams_of_their_own():
    # SB3's PPO twice and PPOClip (the same arithmetic), interleaved with a model that draws other numbers, end where
    # one copy trained alone ends: every parameter equal (the same actions, the same minibatch permutations)
    spec = runner.RunSpec("p", "ppo", "CartPole-v1", 0, 0, n_envs=2)
    kwargs = {"n_steps": 32, "batch_size": 16, "n_epochs": 2}

    def build(key: str, **extra: Any) -> paired.Training:
        return paired.training(runner.algorithm_class(key), spec, 3, {**kwargs, **extra})()

    alone = build("ppo")
    for _ in range(3):
        alone.advance(paired.Clock())
    contestants = {
        "ppo": build("ppo"),
        "other": build("ppo", learning_rate=1e-2),
        "copy": build("ppo"),
        "clip": build("ppo_clip"),
    }
    paired.run_rounds(contestants, rounds=2)
    expected = alone.model.policy.state_dict()
    for label in ("ppo", "copy", "clip"):
        state = contestants[label].model.policy.state_dict()
        assert all(th.equal(state[key], expected[key]) for key in expected), label
    other = contestants["other"].model.policy.state_dict()
    assert not all(th.equal(other[key], expected[key]) for key in expected)
    for contestant in (alone, *contestants.values()):
        contestant.close()


def test_algorithm_keys_come_from_the_zoo_table():
    assert zoo_table.ALGOS == [*ZOO_ALGOS, "ppo", "a2c", "trpo"] and step_size.ALGOS == list(ZOO_ALGOS)
    assert [runner.algorithm_class(key).__name__ for key in ZOO_ALGOS] == [name for _, name in ZOO_ALGOS.values()]
    assert [runner.algorithm_name(key) for key in ("ppo", "trpo")] == ["PPO (SB3)", "TRPO (sb3-contrib)"]
    assert [key for _, _, key, _ in overhead.PAIRS] == ["ppo_clip", "ppo_kl", "trpo_kl"]


# (experiment module, committed folder, the files --report-only regenerates from results.json alone)
COMMITTED = [
    (surrogates, "surrogates/quick", ["results.md"]),
    (zoo_table, "zoo_table/quick", ["results.md"]),
    (step_size, "step_size", ["results.md"]),
    (step_size_sensitivity, "step_size_sensitivity/quick", ["results.md"]),
    (reinforce_variance, "reinforce_variance", ["results.csv"]),
    (overhead, "overhead", ["results.md"]),
    (tutorial_pendulum, "tutorial_pendulum/quick", ["results.md"]),
    (tutorial_pendulum, "tutorial_pendulum/diagnostics", ["results.md"]),
]


@pytest.mark.parametrize(("module", "folder", "regenerated"), COMMITTED, ids=[folder for _, folder, _ in COMMITTED])
def test_report_only_regenerates_the_committed_reports(tmp_path, module, folder, regenerated):
    committed = common.RESULTS / folder
    for path in committed.iterdir():
        if path.suffix in (".json", ".md", ".csv"):
            shutil.copy(path, tmp_path / path.name)
    for name in regenerated:
        (tmp_path / name).unlink()
    run_main(module, "--report-only", "--output", str(tmp_path))
    for name in regenerated:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
    assert (tmp_path / "results.json").read_text() == (committed / "results.json").read_text()


def test_interval_estimates_are_reproducible_and_leave_numpys_generator_as_it_was():
    # rliable's bootstrap draws from NumPy's global generator (its random_state does not reach those draws): the
    # committed intervals differed from one regeneration of a report to the next
    scores = {name: np.random.default_rng(i).random((2, 7)) for i, name in enumerate("ab")}
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = runner.interval_estimates(scores, reps=200)
    assert np.random.rand() == expected_next  # the caller's generator untouched
    np.random.rand(17)
    assert runner.interval_estimates(scores, reps=200) == first
    assert runner.interval_estimates(scores, reps=200, seed=1) != first
