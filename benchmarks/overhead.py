"""Wall-clock overhead of this package's algorithms against the peers they reproduce.

PPOClip vs SB3 PPO, PPOKL vs SB3 PPO, TRPOKL vs sb3-contrib TRPO; on CartPole-v1 (zoo hyperparameters)
and HalfCheetah-v5 (the PPO paper's settings for the PPO pairs, rl-zoo3's MuJoCo TRPO settings for TRPO),
for each diagnostics level, in this one process with one torch thread.

Design (a paired, interleaved measurement): each repetition builds the reference and our algorithm at
every diagnostics level with the same seed, then trains them in lock-step, one rollout + update at a
time, rotating which model goes first. Slow drifts of a shared machine (other processes, CPU frequency)
therefore hit every model alike, which a run-after-run comparison of whole trainings cannot achieve
(its ratios spread by +-10 % on this machine). The time of each update is taken inside ``learn`` (from
the training-start to the training-end callback event), so ``learn``'s own set-up is not counted. Ratios
are taken on the summed times of a repetition; the median and interquartile range over repetitions are
reported.

Two copies of the reference (same class, settings and seed, so exactly the same work) train in the same
rotation; ours is divided by their mean time. The ratio of one copy to the other, the ``control`` row, is the
resolution of the measurement on this machine: a ratio of ours within the control's spread is no measurable
overhead. The construction order of the five models rotates with the repetitions as well (where a model's
objects lie in memory changes its speed by a few percent).

    python -m benchmarks.overhead            # the full run (10 repetitions, about 35 minutes on a quiet 2-core machine)
    python -m benchmarks.overhead --env HalfCheetah-v5 --pair ppo_kl   # one environment and pair
    python -m benchmarks.overhead --quick    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import time
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from benchmarks.common import software_versions, zoo_entry, zoo_env, zoo_kwargs
from sb3_ppo_variants import PPOKL, TRPOKL, PPOClip

LEVELS = ("off", "basic", "full")
CONTROL = "control"  # the reference's second copy
ROWS = (CONTROL, *LEVELS)
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
# updates per repetition: multiples of the 5 models, so each model takes each position of the rotation equally often
# (about 5 to 25 seconds of training per model and repetition)
UPDATES = {
    "CartPole-v1": {"PPOClip / PPO": 30, "PPOKL / PPO": 30, "TRPOKL / TRPO": 10},
    "HalfCheetah-v5": {name: 5 for name, *_ in PAIRS},
}


def settings(key: str, env_id: str) -> tuple[dict, dict]:
    """:return: (zoo entry, constructor kwargs) used for both our algorithm and the reference"""
    source = (ENVIRONMENTS[env_id] or {}).get(key, key)
    entry = zoo_entry(source, env_id)
    return entry, zoo_kwargs(entry)


class TrainingClock(BaseCallback):
    """Adds up the wall-clock and CPU seconds between the training-start and training-end events of ``learn``."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = np.zeros(len(CLOCKS))
        self._start = np.zeros(len(CLOCKS))

    @staticmethod
    def _now() -> np.ndarray:
        return np.array([time.perf_counter(), time.process_time()])

    def _on_training_start(self) -> None:
        self._start = self._now()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.seconds += self._now() - self._start


def one_update(model: BaseAlgorithm, clock: TrainingClock, first: bool) -> None:
    """One rollout + update of ``model`` (continuing its training), timed by ``clock``."""
    model.learn(model.n_steps * model.n_envs, callback=clock, reset_num_timesteps=first)  # type: ignore[attr-defined]


def run_repetition(models: dict[str, BaseAlgorithm], n_updates: int) -> dict[str, np.ndarray]:
    """
    Train the models in lock-step after one untimed warm-up update each, rotating the order every update;
    Python's cyclic garbage collector runs between rounds, not inside a timed update (as ``timeit`` does), so no
    model is charged for the others' garbage.

    :return: seconds per model, one entry per clock
    """
    labels = list(models)
    # one untimed update each first: the first update of a model (and the first of the process) pays one-off costs
    for label in labels:
        one_update(models[label], TrainingClock(), first=True)
    clocks = {label: TrainingClock() for label in models}
    for update in range(n_updates):
        shift = update % len(labels)
        gc.collect()
        gc.disable()
        try:
            for label in labels[shift:] + labels[:shift]:
                one_update(models[label], clocks[label], first=False)
        finally:
            gc.enable()
    return {label: clock.seconds for label, clock in clocks.items()}


def run(repetitions: int, updates: dict[str, dict[str, int]], envs: list[str], keys: list[str]) -> list[dict]:
    """
    :param updates: updates per repetition, by environment and pair name
    :param keys: our zoo keys of the pairs to run
    """
    rows = []
    jobs = [(env_id, pair) for env_id in envs for pair in PAIRS if pair[2] in keys]
    with tqdm(total=len(jobs) * repetitions, desc="overhead") as progress:
        for env_id, (name, ours, key, reference) in jobs:
            entry, kwargs = settings(key, env_id)
            # an entry borrowed from another key (the paper's settings in ppo_kl.yml) may carry its own arguments
            accepted = inspect.signature(ours).parameters
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
            reference_kwargs = {k: v for k, v in kwargs.items() if not k.startswith(OUR_ONLY)}
            n_updates = updates[env_id][name]
            ratios: dict[str, dict[str, list[float]]] = {clock: {label: [] for label in ROWS} for clock in CLOCKS}
            seconds: dict[str, list[float]] = {label: [] for label in ("reference", *ROWS)}
            for rep in range(repetitions):
                configurations = [("reference", reference, reference_kwargs), (CONTROL, reference, reference_kwargs)]
                configurations += [(level, ours, {**kwargs, "diagnostics": level}) for level in LEVELS]
                # where a model lies in memory changes its speed by a few percent: rotate the construction order too
                shift = rep % len(configurations)
                configurations = configurations[shift:] + configurations[:shift]
                models = {
                    label: cls(entry.get("policy", "MlpPolicy"), zoo_env(entry, env_id, rep), seed=rep, **kw)
                    for label, cls, kw in configurations
                }
                # the models' own objects are never garbage: keep them out of the collector's scans
                gc.collect()
                gc.freeze()
                times = run_repetition(models, n_updates)
                gc.unfreeze()
                for model in models.values():
                    model.get_env().close()  # type: ignore[union-attr]
                for label, clock_seconds in times.items():
                    seconds[label].append(float(clock_seconds[0]))
                for index, clock in enumerate(CLOCKS):
                    # ours against both copies of the reference (their mean); the control: one copy against the other
                    reference_seconds = (times["reference"][index] + times[CONTROL][index]) / 2
                    ratios[clock][CONTROL].append(float(times[CONTROL][index] / times["reference"][index]))
                    for level in LEVELS:
                        ratios[clock][level].append(float(times[level][index] / reference_seconds))
                progress.update()
            for label in ROWS:
                row = {"env": env_id, "pair": name, "diagnostics": label, "updates_per_repetition": n_updates}
                for clock in CLOCKS:
                    q25, median, q75 = np.percentile(ratios[clock][label], [25, 50, 75])
                    row[f"median_ratio_{clock}"] = round(float(median), 4)
                    row[f"iqr_{clock}"] = [round(float(q25), 4), round(float(q75), 4)]
                    row[f"ratios_{clock}"] = [round(r, 4) for r in ratios[clock][label]]
                row["median_seconds_ours"] = round(float(np.median(seconds[label])), 3)
                row["median_seconds_reference"] = round(float(np.median(seconds["reference"])), 3)
                rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| env | ours / reference | diagnostics (control: the reference's copy) "
        "| wall-clock: median ratio (IQR) | CPU time: median ratio (IQR) "
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
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repetition, 1 update, CartPole only")
    parser.add_argument("--env", choices=list(ENVIRONMENTS), action="append", help="only these environments (repeatable)")
    keys = [key for *_, key, _ in PAIRS]
    parser.add_argument("--pair", choices=keys, action="append", help="only these pairs, by our zoo key (repeatable)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    th.set_num_threads(1)
    keys = args.pair or keys
    if args.quick:
        rows = run(1, {"CartPole-v1": {name: 1 for name, *_ in PAIRS}}, ["CartPole-v1"], keys)
    else:
        rows = run(args.repetitions, UPDATES, args.env or list(ENVIRONMENTS), keys)
    table = markdown(rows)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.overhead" + (" --quick" if args.quick else f" --repetitions {args.repetitions}")
    command += "".join(f" --env {env_id}" for env_id in args.env or []) + "".join(f" --pair {key}" for key in args.pair or [])
    (args.output / "results.json").write_text(
        json.dumps({"command": command, "versions": software_versions(), "rows": rows}, indent=2) + "\n"
    )
    (args.output / "results.md").write_text(f"Command: `{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
