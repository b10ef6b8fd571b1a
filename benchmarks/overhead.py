"""Wall-clock overhead of this package's algorithms against the peers they reproduce.

PPOClip vs SB3 PPO, PPOKL vs SB3 PPO, TRPOKL vs sb3-contrib TRPO; on CartPole-v1 (zoo hyperparameters)
and HalfCheetah-v5 (the PPO paper's settings for the PPO pairs, rl-zoo3's MuJoCo TRPO settings for TRPO),
for each diagnostics level. Each repetition runs the reference and then ours at every level, in
alternating order, in this one process, with one torch thread; the ratio ours/reference is taken within
the repetition and the median and interquartile range over repetitions are reported.

    python -m benchmarks.overhead            # the full run (about 15 minutes on a quiet 2-core machine)
    python -m benchmarks.overhead --quick    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from tqdm import tqdm

from benchmarks.common import software_versions, zoo_entry, zoo_env, zoo_kwargs
from sb3_ppo_variants import PPOKL, TRPOKL, PPOClip

LEVELS = ("off", "basic", "full")
CLOCKS = ("wall", "cpu")
RESULTS = Path(__file__).parent / "results" / "overhead"

# (name, our class, our zoo key, reference class) ; the reference gets our entry minus our own arguments
PAIRS = [
    ("PPOClip / PPO", PPOClip, "ppo_clip", PPO),
    ("PPOKL / PPO", PPOKL, "ppo_kl", PPO),
    ("TRPOKL / TRPO", TRPOKL, "trpo_kl", TRPO),
]
# CartPole-v1: each algorithm's own zoo entry; HalfCheetah-v5: ppo_kl.yml's entry is the PPO paper's settings
ENVIRONMENTS = {"CartPole-v1": None, "HalfCheetah-v5": {"ppo_clip": "ppo_kl"}}
OUR_ONLY = ("kl_", "diagnostics")


def settings(key: str, env_id: str) -> tuple[dict, dict]:
    """:return: (zoo entry, constructor kwargs) used for both our algorithm and the reference"""
    source = (ENVIRONMENTS[env_id] or {}).get(key, key)
    entry = zoo_entry(source, env_id)
    return entry, zoo_kwargs(entry)


def timed_learn(algo_class, entry: dict, kwargs: dict, env_id: str, n_updates: int, seed: int) -> tuple[float, float]:
    """
    Wall-clock and CPU seconds of this process spent in ``learn`` for ``n_updates`` rollouts + updates
    (construction excluded). With one torch thread, CPU time is the cost of the run itself, insensitive to
    other processes competing for the cores; wall-clock time is what the user waits.
    """
    env = zoo_env(entry, env_id, seed)
    model = algo_class(entry.get("policy", "MlpPolicy"), env, seed=seed, **kwargs)
    steps = n_updates * model.n_steps * env.num_envs
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    elapsed = time.perf_counter() - start_wall, time.process_time() - start_cpu
    env.close()
    return elapsed


def run(repetitions: int, updates: dict[str, int], envs: list[str]) -> list[dict]:
    rows = []
    jobs = [(env_id, pair) for env_id in envs for pair in PAIRS]
    with tqdm(total=len(jobs) * repetitions, desc="overhead") as progress:
        for env_id, (name, ours, key, reference) in jobs:
            entry, kwargs = settings(key, env_id)
            # an entry borrowed from another key (the paper's settings in ppo_kl.yml) may carry its own arguments
            accepted = inspect.signature(ours).parameters
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
            reference_kwargs = {k: v for k, v in kwargs.items() if not k.startswith(OUR_ONLY)}
            ratios: dict[str, dict[str, list[float]]] = {clock: {level: [] for level in LEVELS} for clock in CLOCKS}
            seconds: dict[str, list[float]] = {label: [] for label in ("reference", *LEVELS)}
            for rep in range(repetitions):
                runs = [("reference", reference, reference_kwargs)]
                runs += [(level, ours, {**kwargs, "diagnostics": level}) for level in LEVELS]
                if rep % 2:  # alternate the order so drifts of the machine hit both sides
                    runs.reverse()
                times = {label: timed_learn(cls, entry, kw, env_id, updates[env_id], seed=rep) for label, cls, kw in runs}
                for label, (wall, _) in times.items():
                    seconds[label].append(wall)
                for index, clock in enumerate(CLOCKS):
                    for level in LEVELS:
                        ratios[clock][level].append(times[level][index] / times["reference"][index])
                progress.update()
            for level in LEVELS:
                row = {"env": env_id, "pair": name, "diagnostics": level}
                for clock in CLOCKS:
                    q25, median, q75 = np.percentile(ratios[clock][level], [25, 50, 75])
                    row[f"median_ratio_{clock}"] = round(float(median), 4)
                    row[f"iqr_{clock}"] = [round(float(q25), 4), round(float(q75), 4)]
                    row[f"ratios_{clock}"] = [round(r, 4) for r in ratios[clock][level]]
                row["median_seconds_ours"] = round(float(np.median(seconds[level])), 3)
                row["median_seconds_reference"] = round(float(np.median(seconds["reference"])), 3)
                rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| env | ours / reference | diagnostics | wall-clock: median ratio (IQR) | CPU time: median ratio (IQR) "
        "| median wall s (ours / ref) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row[f'median_ratio_{clock}']:.3f} ({row[f'iqr_{clock}'][0]:.3f} to {row[f'iqr_{clock}'][1]:.3f})"
            for clock in CLOCKS
        ]
        lines.append(
            f"| {row['env']} | {row['pair']} | {row['diagnostics']} | {cells[0]} | {cells[1]} | "
            f"{row['median_seconds_ours']:.2f} / {row['median_seconds_reference']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, 1 update, CartPole only")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.quick:
        rows = run(1, {"CartPole-v1": 1}, ["CartPole-v1"])
    else:
        rows = run(args.repetitions, {"CartPole-v1": 20, "HalfCheetah-v5": 2}, list(ENVIRONMENTS))
    table = markdown(rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.overhead" + (" --quick" if args.quick else f" --repetitions {args.repetitions}")
    (args.output / "results.json").write_text(
        json.dumps({"command": command, "versions": software_versions(), "rows": rows}, indent=2) + "\n"
    )
    (args.output / "results.md").write_text(f"Command: `{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
