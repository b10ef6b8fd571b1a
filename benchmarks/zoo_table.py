"""An rl-zoo3-style results table: our four algorithms beside SB3 PPO, SB3 A2C and sb3-contrib TRPO.

Each algorithm runs with its shipped zoo hyperparameters: ours from this package's hyperparams/<key>.yml, the peers
from rl-zoo3's own ppo.yml / a2c.yml / trpo.yml (for HalfCheetah-v5 and Hopper-v5 the peers' files only have v4
entries; those are used, as the tasks are the same family). A run is built as ``rl_zoo3.train`` builds it (n_envs,
VecNormalize with the algorithm's gamma, linear schedules, policy_kwargs); its result is the mean return of
``eval_episodes`` deterministic evaluation episodes of the final model (frozen normalisation statistics, raw
rewards), and a cell is the mean ± std over seeds, with the zoo command that reproduces it.
LunarLander-v3 needs Box2D (``gymnasium[box2d]``, part of this package's ``benchmarks`` extra, binary wheels);
without it that column is skipped and said so.

Profiles: ``full`` = the zoo's budgets (n_timesteps of each entry), seeds 0, 1, 2, 10 evaluation episodes;
``quick`` = seeds 0, 1, budgets capped at 100k steps (classic control and MuJoCo), 10 evaluation
episodes (under-trained wherever the zoo budget is larger: the table says which cells were capped).

    python -m benchmarks.zoo_table --profile quick
    python -m benchmarks.zoo_table --profile full
    python -m benchmarks.zoo_table --smoke
    python -m benchmarks.zoo_table --profile quick --report-only
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np

from benchmarks.runner import RESULTS, load_runs, run_all, spec_from_zoo, write_manifest, zoo_command, zoo_hyperparams

EXPERIMENT = "zoo_table"
ALGOS = ["reinforce", "ppo_kl", "ppo_clip", "trpo_kl", "ppo", "a2c", "trpo"]
NAMES = {
    "reinforce": "REINFORCE",
    "ppo_kl": "PPOKL",
    "ppo_clip": "PPOClip",
    "trpo_kl": "TRPOKL",
    "ppo": "PPO (SB3)",
    "a2c": "A2C (SB3)",
    "trpo": "TRPO (sb3-contrib)",
}
ENVS = ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "LunarLander-v3", "HalfCheetah-v5", "Hopper-v5"]
MUJOCO = ("HalfCheetah-v5", "Hopper-v5")
PEERS = ("ppo", "a2c", "trpo")
PROFILES = {
    "full": {"envs": ENVS, "seeds": [0, 1, 2], "caps": {}, "eval_episodes": 10},
    "quick": {"envs": ENVS, "seeds": [0, 1], "caps": {"classic": 100_000, "mujoco": 100_000}, "eval_episodes": 10},
    "smoke": {"envs": ["CartPole-v1"], "seeds": [0], "caps": {"classic": 2_048, "mujoco": 2_048}, "eval_episodes": 1},
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


def make_specs(profile: dict, smoke: bool = False) -> list:
    specs = []
    for env_id in profile["envs"]:
        if not available(env_id):
            continue
        cap = profile["caps"].get("mujoco" if env_id in MUJOCO else "classic")
        for seed in profile["seeds"]:
            for algo in ALGOS:
                source = entry_id(algo, env_id)
                entry = zoo_hyperparams(algo, env_id, source)
                zoo_steps = int(float(entry.get("n_timesteps", 1e6)))
                steps = min(zoo_steps, cap) if cap else zoo_steps
                if smoke and algo == "reinforce":
                    entry["n_steps"] = 1000  # one update within the tiny budget
                extra = f" -n {steps}" if steps != zoo_steps else ""
                command = zoo_command(algo, env_id if source is None else source, seed, extra)
                specs.append(
                    spec_from_zoo(
                        f"{algo}-{env_id}-s{seed}",
                        algo,
                        env_id,
                        seed,
                        entry,
                        steps=steps,
                        eval_episodes=profile["eval_episodes"],
                        labels={
                            "command": command,
                            "zoo_steps": zoo_steps,
                            "entry": source or env_id,
                            "note": "v4 entry run on the v5 task" if source else "",
                        },
                    )
                )
    return specs


def report(out_dir: Path, profile: dict) -> dict:
    runs = load_runs(out_dir / "runs")
    cells = {}
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
    envs = [env for env in profile["envs"] if any(key[1] == env for key in cells)]
    skipped = [env for env in profile["envs"] if not available(env)]
    rows = []
    for (algo, env_id), cell in sorted(cells.items(), key=lambda kv: (ALGOS.index(kv[0][0]), ENVS.index(kv[0][1]))):
        cell.pop("command", None)
        rows.append(
            {
                "algo": NAMES[algo],
                "key": algo,
                "env": env_id,
                "mean": float(np.mean(cell["evals"])),
                "std": float(np.std(cell["evals"])),
                **cell,
                "capped": cell["steps"] < cell["zoo_steps"],
            }
        )
    result = {"profile": profile, "skipped_envs": skipped, "rows": rows}
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "results.md").write_text(markdown(result, envs, out_dir) + "\n")
    return result


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
        lines.append(f"| {NAMES[algo]} | " + " | ".join(cells) + " |")
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
        lines.append(f"| {NAMES[algo]} | " + " | ".join(cells) + " |")
    if result["skipped_envs"]:
        lines += ["", f"Skipped (Box2D not installed): {', '.join(result['skipped_envs'])}."]
    lines += ["", "Commands (one per seed; `-n` only where the budget differs from the zoo's):", ""]
    for row in result["rows"]:
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"- {row['algo']} / {row['env']}{note}: `{row['commands'][0]}` (seeds {row['seeds']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--smoke", action="store_true", help="tiny CI budget (overrides --profile)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    name = "smoke" if args.smoke else args.profile
    profile = PROFILES[name]
    out_dir = args.out / EXPERIMENT / name
    specs = make_specs(profile, smoke=args.smoke)
    if not args.report_only:
        write_manifest(out_dir, EXPERIMENT, name, specs, {"profile_settings": profile})
        run_all(specs, out_dir / "runs", workers=args.workers, desc=f"{EXPERIMENT}/{name}")
    report(out_dir, profile)
    print((out_dir / "results.md").read_text())


if __name__ == "__main__":
    main()
