"""Wall-clock overhead of this package's algorithms against the peers they reproduce.

PPOClip vs SB3 PPO, PPOKL vs SB3 PPO, TRPOKL vs sb3-contrib TRPO; on CartPole-v1 (zoo hyperparameters)
and HalfCheetah-v5 (the PPO paper's settings for the PPO pairs, rl-zoo3's MuJoCo TRPO settings for TRPO),
for each diagnostics level, in this one process with one torch thread.

Design (a paired, interleaved measurement): each repetition builds the reference and our algorithm at
every diagnostics level with the same seed, then trains them in lock-step, one rollout + update at a
time, in a turn order drawn at random for each round. Slow drifts of a shared machine (other processes, CPU frequency)
therefore hit every model alike, which a run-after-run comparison of whole trainings cannot achieve
(its ratios spread by +-10 % on this machine). The time of each update is taken inside ``learn`` (from
the training-start to the training-end callback event), so ``learn``'s own set-up is not counted. Ratios
are taken on the summed times of a repetition; the median and interquartile range over repetitions are
reported.

Two copies of the reference (same class, settings and seed, so exactly the same work) train in the same
rounds; ours is divided by their mean time. The ratio of one copy to the other, the ``control`` row, is the
resolution of the measurement on this machine: a ratio of ours within the control's spread is no measurable
overhead. The construction order of the five models is drawn at random for each repetition (where a
model's objects lie in memory changes its speed by a few percent).

The timing machinery (turn orders, clocks, ratios, median and interquartile range) is ``benchmarks.paired``, shared with
the end-to-end measurement ``benchmarks.speed``. Not through the runner's ``run_all``: the runner trains each run
whole, in a worker process of its own, while this measurement needs the five models of a pair in one process,
advanced update by update in turn. It shares the rest: the command line of every experiment, the runs built from
the zoo entries as ``rl_zoo3.train`` builds them (``runner.spec_from_zoo``, ``runner.make_env``) and the converter of
zoo entries (with the ``lin_`` schedules held at their initial value: a schedule's progress means nothing for single
updates out of a training's context).

    python -m benchmarks.overhead                 # the committed results (profile full: 10 repetitions, ~35 min on 2 cores)
    python -m benchmarks.overhead --env HalfCheetah-v5 --pair ppo_kl   # one environment and pair
    python -m benchmarks.overhead --smoke         # CI smoke test (seconds)
    python -m benchmarks.overhead --report-only   # results.md from results.json

Results go to ``benchmarks/results/overhead/`` (profile full) or a new temporary folder (``--smoke``); ``--output``
elsewhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import paired
from benchmarks.common import PAPER_ENTRY, zoo_entry, zoo_kwargs
from benchmarks.runner import RunSpec, algorithm_class, algorithm_name, spec_from_zoo

LEVELS = ("off", "basic", "full")
CONTROL = "control"  # the reference's second copy
ROWS = (CONTROL, *LEVELS)

# our zoo key -> the key of the peer it reproduces; the peer gets our entry minus our own arguments
REFERENCES = {"ppo_clip": "ppo", "ppo_kl": "ppo", "trpo_kl": "trpo"}
# (name, our class, our zoo key, reference class)
PAIRS = [
    (f"{algorithm_name(key)} / {algorithm_class(peer).__name__}", algorithm_class(key), key, algorithm_class(peer))
    for key, peer in REFERENCES.items()
]
KEYS = list(REFERENCES)
# CartPole-v1: each algorithm's own zoo entry; HalfCheetah-v5: the PPO paper's settings (common.PAPER_ENTRY) for the PPOs
ENVIRONMENTS: dict[str, dict[str, tuple[str, str]] | None] = {
    "CartPole-v1": None,
    "HalfCheetah-v5": {"ppo_clip": PAPER_ENTRY, "ppo_kl": PAPER_ENTRY},
}
# updates per repetition, one per round in a turn order drawn at random for each round (about 5 to 25 seconds of
# training per model and repetition)
UPDATES = {
    "CartPole-v1": {"PPOClip / PPO": 30, "PPOKL / PPO": 30, "TRPOKL / TRPO": 10},
    "HalfCheetah-v5": {name: 5 for name, *_ in PAIRS},
}
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"repetitions": 10, "updates": UPDATES, "envs": list(ENVIRONMENTS)},
    "smoke": {"repetitions": 1, "updates": {"CartPole-v1": {name: 1 for name, *_ in PAIRS}}, "envs": ["CartPole-v1"]},
}


def zoo_spec(key: str, env_id: str) -> RunSpec:
    """:return: the run of our zoo key ``key`` on ``env_id`` as ``rl_zoo3.train`` builds it (seed 0)"""
    source, entry_id = (ENVIRONMENTS[env_id] or {}).get(key, (key, None))
    return spec_from_zoo(f"{key}-{env_id}", key, env_id, 0, zoo_entry(source, env_id, entry_id))


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
            # an entry borrowed from another key (the paper's settings, PAPER_ENTRY) may carry its own arguments; the
            # reference gets ours without our own arguments (kl_*, diagnostics)
            kwargs = paired.accepted(ours, zoo_kwargs(spec.kwargs, constant_schedules=True))
            n_updates = updates[env_id][name]
            ratios: dict[str, list[np.ndarray]] = {label: [] for label in ROWS}
            # what each level costs on top of ours at "off" (the fast path alone): time over that time, same repetition
            over_off: dict[str, list[np.ndarray]] = {level: [] for level in LEVELS}
            seconds: dict[str, list[float]] = {label: [] for label in ("reference", *ROWS)}
            for rep in range(repetitions):
                configurations = [("reference", reference, kwargs), (CONTROL, reference, kwargs)]
                configurations += [(level, ours, {**kwargs, "diagnostics": level}) for level in LEVELS]
                factories = {
                    label: paired.training(cls, spec, rep, paired.accepted(cls, kw)) for label, cls, kw in configurations
                }
                clocks = paired.run_repetition(factories, rep, n_updates)
                for label, clock in clocks.items():
                    seconds[label].append(float(clock.seconds[paired.CLOCKS.index("wall")]))
                # time over time (the same steps): the control one copy over the other, ours over both copies together
                ratios[CONTROL].append(1 / paired.throughput_ratio(clocks, CONTROL, ["reference"]))
                for level in LEVELS:
                    ratios[level].append(1 / paired.throughput_ratio(clocks, level, ["reference", CONTROL]))
                    over_off[level].append(1 / paired.throughput_ratio(clocks, level, ["off"]))
                progress.update()
            for label in ROWS:
                row = {"env": env_id, "pair": name, "diagnostics": label, "updates_per_repetition": n_updates}
                for clock_name, (median, iqr, values) in paired.clock_summaries(ratios[label]).items():
                    row |= {f"median_ratio_{clock_name}": median, f"iqr_{clock_name}": iqr, f"ratios_{clock_name}": values}
                if label in over_off:
                    median, iqr, _ = paired.clock_summaries(over_off[label])["cpu"]
                    row |= {"median_over_off_cpu": median, "iqr_over_off_cpu": iqr}
                row["median_seconds_ours"] = round(float(np.median(seconds[label])), 3)
                row["median_seconds_reference"] = round(float(np.median(seconds["reference"])), 3)
                rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| env | ours / reference | diagnostics (control: the reference's copy) "
        "| wall-clock: median ratio (IQR) | CPU time: median ratio (IQR) "
        "| CPU time over ours at off (IQR) | median wall s (ours / ref) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [paired.cell(row[f"median_ratio_{clock}"], row[f"iqr_{clock}"]) for clock in paired.CLOCKS]
        over_off = paired.cell(row["median_over_off_cpu"], row["iqr_over_off_cpu"]) if "median_over_off_cpu" in row else "—"
        lines.append(
            f"| {row['env']} | {row['pair']} | {row['diagnostics']} | {cells[0]} | {cells[1]} | {over_off} | "
            f"{row['median_seconds_ours']:.2f} / {row['median_seconds_reference']:.2f} |"
        )
    return "\n".join(lines)


def write_report(result: dict, out_dir: Path) -> str:
    """Write ``results.md`` from the content of ``results.json``; :return: its table"""
    table = markdown(result["rows"])
    (out_dir / "results.md").write_text(f"{paired.commands_text(result)}\n\n{table}\n")
    return table


def measure(args: argparse.Namespace, profile: Mapping[str, Any], repetitions: int, envs: list[str]) -> dict[str, Any]:
    return {"rows": run(repetitions, profile["updates"], envs, args.pair or KEYS)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", choices=KEYS, action="append", help="only these pairs, by our zoo key (repeatable)")


EXPERIMENT = paired.PairedExperiment(
    "overhead", __doc__, PROFILES, list(ENVIRONMENTS), measure, write_report, add_arguments=add_arguments
)


def main(argv: list[str] | None = None) -> Path:
    """:return: the results folder"""
    return paired.main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
