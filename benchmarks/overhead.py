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

Not through the runner's ``run_all``: the runner trains each run whole, in a worker process of its own, while this
measurement needs the five models of a pair in one process, advanced update by update in rotation. It shares the rest:
the command line of every experiment, the runs built from the zoo entries as ``rl_zoo3.train`` builds them
(``runner.spec_from_zoo``, ``runner.make_env``) and the converter of zoo entries (with the ``lin_`` schedules held at
their initial value: a schedule's progress means nothing for single updates out of a training's context).

    python -m benchmarks.overhead                 # the committed results (profile full: 10 repetitions, ~35 min on 2 cores)
    python -m benchmarks.overhead --env HalfCheetah-v5 --pair ppo_kl   # one environment and pair
    python -m benchmarks.overhead --smoke         # CI smoke test (seconds)
    python -m benchmarks.overhead --report-only   # results.md from results.json

Results go to ``benchmarks/results/overhead/`` (profile full) or a new temporary folder (``--smoke``); ``--output``
elsewhere.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from tqdm import tqdm

from benchmarks.common import (
    RESULTS,
    command_line,
    experiment_parser,
    profile_and_output,
    software_versions,
    zoo_entry,
    zoo_kwargs,
)
from benchmarks.runner import RunSpec, algorithm_class, algorithm_name, make_env, spec_from_zoo

LEVELS = ("off", "basic", "full")
CONTROL = "control"  # the reference's second copy
ROWS = (CONTROL, *LEVELS)
CLOCKS = ("wall", "cpu")

# our zoo key -> the key of the peer it reproduces; the peer gets our entry minus our own arguments
REFERENCES = {"ppo_clip": "ppo", "ppo_kl": "ppo", "trpo_kl": "trpo"}
# (name, our class, our zoo key, reference class)
PAIRS = [
    (f"{algorithm_name(key)} / {algorithm_class(peer).__name__}", algorithm_class(key), key, algorithm_class(peer))
    for key, peer in REFERENCES.items()
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
PROFILES = {
    "full": {"repetitions": 10, "updates": UPDATES, "envs": list(ENVIRONMENTS)},
    "smoke": {"repetitions": 1, "updates": {"CartPole-v1": {name: 1 for name, *_ in PAIRS}}, "envs": ["CartPole-v1"]},
}


def zoo_spec(key: str, env_id: str) -> RunSpec:
    """:return: the run of our zoo key ``key`` on ``env_id`` as ``rl_zoo3.train`` builds it (seed 0)"""
    source = (ENVIRONMENTS[env_id] or {}).get(key, key)
    return spec_from_zoo(f"{key}-{env_id}", key, env_id, 0, zoo_entry(source, env_id))


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
            spec = zoo_spec(key, env_id)
            # an entry borrowed from another key (the paper's settings in ppo_kl.yml) may carry its own arguments
            accepted = inspect.signature(ours).parameters
            kwargs = {k: v for k, v in zoo_kwargs(spec.kwargs, constant_schedules=True).items() if k in accepted}
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
                    label: cls(spec.policy, make_env(dataclasses.replace(spec, seed=rep)), seed=rep, **kw)
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


def write_report(result: dict, out_dir: Path) -> str:
    """Write ``results.md`` from the content of ``results.json``; :return: its table"""
    table = markdown(result["rows"])
    (out_dir / "results.md").write_text(f"Command: `{result['command']}`\n\n{table}\n")
    return table


def main(argv: list[str] | None = None) -> Path:
    """:return: the results folder"""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = experiment_parser(__doc__, PROFILES, "full")
    parser.add_argument("--repetitions", type=int, default=None, help="repetitions (default: the profile's)")
    parser.add_argument("--env", choices=list(ENVIRONMENTS), action="append", help="only these environments (repeatable)")
    keys = [key for *_, key, _ in PAIRS]
    parser.add_argument("--pair", choices=keys, action="append", help="only these pairs, by our zoo key (repeatable)")
    args = parser.parse_args(argv)
    name, out_dir = profile_and_output(args, "overhead", {"full": RESULTS / "overhead"})
    if not args.report_only:
        profile = PROFILES[name]
        th.set_num_threads(1)
        envs = [env_id for env_id in profile["envs"] if not args.env or env_id in args.env]
        rows = run(args.repetitions or profile["repetitions"], profile["updates"], envs, args.pair or keys)
        out_dir.mkdir(parents=True, exist_ok=True)
        result = {"command": command_line("overhead", argv), "versions": software_versions(), "rows": rows}
        (out_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    if not (out_dir / "results.json").exists():
        raise SystemExit(f"nothing to report: no results.json in {out_dir}")
    print(write_report(json.loads((out_dir / "results.json").read_text()), out_dir))
    print(f"results: {out_dir}", file=sys.stderr)
    return out_dir


if __name__ == "__main__":
    main()
