"""An rl-zoo3-style results table: our four algorithms beside SB3 PPO, SB3 A2C and sb3-contrib TRPO.

Each algorithm runs with its shipped zoo hyperparameters: ours from this package's hyperparams/<key>.yml, the peers
from rl-zoo3's own ppo.yml / a2c.yml / trpo.yml (for HalfCheetah-v5 and Hopper-v5 the peers' files only have v4
entries; those are used, as the tasks are the same family). A run is built as ``rl_zoo3.train`` builds it (n_envs,
VecNormalize with the algorithm's gamma, linear schedules, policy_kwargs); its result is the mean return of
``eval_episodes`` deterministic evaluation episodes of the final model (frozen normalisation statistics, raw
rewards), and a cell is the mean ± std over seeds, with the zoo command that reproduces it.
LunarLander-v3 needs Box2D (``gymnasium[box2d]``, part of this package's ``benchmarks`` extra, binary wheels);
without it that column is skipped and said so.

Profiles: ``full`` = the zoo's budgets (n_timesteps of each entry), seeds 0, 1, 2, 10 evaluation episodes, the
package's diagnostics recorded once per update (``runner.DIAGNOSTIC_KEYS``); its PPOKL and PPOClip runs on
HalfCheetah-v5, seeds 0 and 1, are those of ``benchmarks.kl_vs_clip`` (profile quick), and each reuses the other's
finished runs;
``quick`` = seeds 0, 1, budgets capped at 100k steps (classic control and MuJoCo), 10 evaluation
episodes (under-trained wherever the zoo budget is larger: the table says which cells were capped).

    python -m benchmarks.zoo_table --profile quick                 # the committed results
    python -m benchmarks.zoo_table --profile full
    python -m benchmarks.zoo_table --smoke                         # CI smoke test (seconds)
    python -m benchmarks.zoo_table --profile quick --report-only   # the report from the stored results
    python -m benchmarks.zoo_table --profile quick --only ppo_kl:CartPole-v1   # rerun one cell, keep the other rows

Results go to ``benchmarks/results/zoo_table/<profile>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.runner import DIAGNOSTIC_KEYS, PEERS, RunSpec, algorithm_name, zoo_run
from sb3_ppo_variants.zoo import ZOO_ALGOS

ALGOS = [*ZOO_ALGOS, *PEERS]
ENVS = ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "LunarLander-v3", "HalfCheetah-v5", "Hopper-v5"]
MUJOCO = ("HalfCheetah-v5", "Hopper-v5")
PROFILES = {
    "full": {
        "envs": ENVS,
        "seeds": [0, 1, 2],
        "caps": {},
        "eval_episodes": 10,
        "record_keys": list(DIAGNOSTIC_KEYS),
        "reuse": ["kl_vs_clip/quick"],
    },
    "quick": {"envs": ENVS, "seeds": [0, 1], "caps": {"classic": 100_000, "mujoco": 100_000}, "eval_episodes": 10},
    "smoke": {
        "envs": ["CartPole-v1"],
        "seeds": [0],
        "caps": {"classic": 2_048, "mujoco": 2_048},
        "eval_episodes": 1,
        "overrides": {"reinforce": {"n_steps": 1000}},  # one update within the tiny budget
    },
}

# rl-zoo3's published table (benchmark.md of DLR-RM/rl-baselines3-zoo): one trained agent per cell, evaluated for
# ~150k steps; (mean, std, training steps). Its LunarLander / MuJoCo rows are v2 / v3 tasks, the closest to ours.
ZOO_BENCHMARK_URL = "https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md"
ZOO_BENCHMARK_CSV = Path(__file__).with_name("zoo_benchmark.csv")


def published_zoo_numbers() -> dict[str, dict[str, tuple[float, float, str]]]:
    """:return: the rows copied from benchmark.md (``zoo_benchmark.csv``): algo -> env (ours) -> (mean, std, training steps)"""
    published: dict[str, dict[str, tuple[float, float, str]]] = {}
    with open(ZOO_BENCHMARK_CSV, newline="") as file:
        for row in csv.DictReader(file):
            published.setdefault(row["algo"], {})[row["env"]] = (
                float(row["mean"]),
                float(row["std"]),
                row["budget"].replace("(", " ("),
            )
    return published


def entry_id(algo: str, env_id: str) -> str | None:
    """The entry rl-zoo3 reads; None: the entry of ``env_id`` itself."""
    if algo in PEERS and env_id in MUJOCO:
        return env_id.replace("-v5", "-v4")
    return None


def available(env_id: str) -> bool:
    return env_id != "LunarLander-v3" or importlib.util.find_spec("Box2D") is not None


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: every (environment, seed, algorithm) run of the profile, with the algorithm's zoo entry"""
    specs = []
    for env_id in profile["envs"]:
        if not available(env_id):
            continue
        cap = profile["caps"].get("mujoco" if env_id in MUJOCO else "classic")
        for seed in profile["seeds"]:
            for algo in ALGOS:
                source = entry_id(algo, env_id)
                specs.append(
                    zoo_run(
                        algo,
                        env_id,
                        seed,
                        cap=cap,
                        entry_id=source,
                        overrides=profile.get("overrides", {}).get(algo),
                        labels={"entry": source or env_id, "note": "v4 entry run on the v5 task" if source else ""},
                        eval_episodes=profile["eval_episodes"],
                        record_keys=tuple(profile.get("record_keys", ())),
                    )
                )
    return specs


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: one row per (algorithm, environment), over the seeds"""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs.values():
        spec = run["spec"]
        cell = cells.setdefault(
            (spec["algo"], spec["env_id"]),
            {"evals": [], "seeds": [], "commands": [], "steps": spec["steps"], **spec["labels"], "wall_time_s": []},
        )
        cell["evals"].append(run["eval"]["mean"])
        cell["seeds"].append(spec["seed"])
        cell["commands"].append(spec["labels"]["command"])
        cell["wall_time_s"].append(run["wall_time_s"])
    skipped = [env for env in profile["envs"] if not available(env)]
    rows = []
    for (algo, env_id), cell in sorted(cells.items(), key=lambda kv: (ALGOS.index(kv[0][0]), ENVS.index(kv[0][1]))):
        cell.pop("command", None)
        rows.append(
            {
                "algo": algorithm_name(algo),
                "key": algo,
                "env": env_id,
                "mean": float(np.mean(cell["evals"])),
                "std": float(np.std(cell["evals"])),
                **cell,
                "capped": cell["steps"] < cell["zoo_steps"],
            }
        )
    return {"profile": profile, "skipped_envs": skipped, "rows": rows}


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its tables"""
    envs = [env for env in result["profile"]["envs"] if any(row["env"] == env for row in result["rows"])]
    text = markdown(result, envs, out_dir)
    (out_dir / "results.md").write_text(text + "\n")
    return text


def markdown(result: dict, envs: list[str], out_dir: Path) -> str:
    manifest = out_dir / "manifest.json"
    command = json.loads(manifest.read_text())["command"] if manifest.exists() else "?"
    by_cell = {(row["key"], row["env"]): row for row in result["rows"]}
    lines = [
        f"Command: `{command}`  ",
        f"Seeds {result['profile']['seeds']}; each cell: mean ± std over seeds of the mean return of "
        f"{result['profile']['eval_episodes']} deterministic evaluation episodes of the final model; "
        "* = budget capped below the zoo's n_timesteps.",
        "",
        "| algorithm | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for algo in ALGOS:
        cells = []
        for env in envs:
            row = by_cell.get((algo, env))
            cells.append("" if row is None else f"{row['mean']:.1f} ± {row['std']:.1f}{'*' if row['capped'] else ''}")
        lines.append(f"| {algorithm_name(algo)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"rl-zoo3's published numbers ([benchmark.md]({ZOO_BENCHMARK_URL}): one agent per cell, its own budget) "
        "and the difference of our peer runs from them:",
        "",
        "| algorithm | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for algo, published in published_zoo_numbers().items():
        cells = []
        for env in envs:
            mean, std, budget = published[env]
            row = by_cell.get((algo, env))
            ours = "" if row is None else f"; here {row['mean'] - mean:+.1f}"
            cells.append(f"{mean:.1f} ± {std:.1f} @ {budget}{ours}")
        lines.append(f"| {algorithm_name(algo)} | " + " | ".join(cells) + " |")
    if result["skipped_envs"]:
        lines += ["", f"Skipped (Box2D not installed): {', '.join(result['skipped_envs'])}."]
    lines += ["", "Commands (one per seed; `-n` only where the budget differs from the zoo's):", ""]
    for row in result["rows"]:
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"- {row['algo']} / {row['env']}{note}: `{row['commands'][0]}` (seeds {row['seeds']})")
    return "\n".join(lines)


EXPERIMENT = runner.Experiment(
    "zoo_table", __doc__, PROFILES, "quick", make_specs, summarise, write_report, row_key=lambda row: (row["key"], row["env"])
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
