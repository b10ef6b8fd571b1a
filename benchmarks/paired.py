"""The paired, interleaved timing that ``benchmarks.overhead`` and ``benchmarks.speed`` share.

A repetition builds every contestant of a comparison (models with the same seed, and anything else that is timed
beside them, such as an environment stepped with random actions) in one process, in a construction order drawn at
random for each repetition (where a model's objects lie in memory changes its speed by a few percent; a rotation would
build the control copy right after its original in almost every repetition, and the speed benchmark's CartPole-v1
control came out at 1.04-1.05 that way). It then advances each
of them once, untimed (the first update of a model, and of the process, pays one-off costs), and then in rounds: in
each round every contestant advances its number of units (updates) in turn, in a turn order drawn at random for each
round (seeded by the repetition). Slow drifts of a shared machine (other processes, CPU frequency) therefore hit every
contestant alike, and no contestant always follows the same one (a plain rotation runs the control copy right after
its original in almost every round, where it may find the same code warm in the caches). A model draws its random
numbers from streams of its own (:class:`Training`): the same draws as if it trained alone, whatever the turn order,
so models built with the same seed and the same arithmetic (the control's two copies, SB3's PPO and PPOClip) step
their environments through exactly the same states and do exactly the same work. Python's cyclic garbage
collector runs between rounds, not inside one (as ``timeit`` does), so no contestant is charged for another's garbage;
the contestants' own objects are frozen out of its scans.

A :class:`Clock` adds up the wall-clock (``time.perf_counter``) and CPU (``time.process_time``: every thread of the
process) seconds and the environment steps of a contestant; as the callback of ``learn`` it times from the
training-start to the training-end event, so ``learn``'s own set-up is not counted. Ratios between contestants are
taken on a repetition's sums (:func:`throughput_ratio`); the reports give their median and interquartile range over
repetitions (:func:`summary`).

A paired experiment describes itself as a :class:`PairedExperiment` and hands it to :func:`main`: the command line of
every experiment (``benchmarks.common.experiment_parser``) plus ``--repetitions`` and ``--env``; ``results.json`` holds
the command, the software versions and what the measurement returns, and the report derives from it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from benchmarks.common import RESULTS, command_line, experiment_parser, profile_and_output, software_versions
from benchmarks.runner import RunSpec, make_env

CLOCKS = ("wall", "cpu")  # the order of the entries of Clock.seconds and of every per-clock array

T = TypeVar("T")
Summary = tuple[float, list[float], list[float]]  # median, [q25, q75], the values


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    """:return: ``items`` in an order drawn from a generator of its own seeded by ``seed`` (the global ones untouched)"""
    return [items[index] for index in np.random.default_rng([seed, 1]).permutation(len(items))]


class Clock(BaseCallback):
    """
    Adds up the wall-clock and CPU seconds (in the order of ``CLOCKS``) and the environment steps between
    :meth:`start` and :meth:`stop`; as a callback of ``learn``, between its training-start and training-end events.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds = np.zeros(len(CLOCKS))
        self.steps = 0
        self._start = np.zeros(len(CLOCKS))
        self._start_steps = 0

    @staticmethod
    def _now() -> np.ndarray:
        return np.array([time.perf_counter(), time.process_time()])

    def start(self, steps: int = 0) -> None:
        """:param steps: the step counter now (the number of steps is taken as its difference at :meth:`stop`)"""
        self._start_steps = steps
        self._start = self._now()

    def stop(self, steps: int = 0) -> None:
        self.seconds += self._now() - self._start
        self.steps += steps - self._start_steps

    def _on_training_start(self) -> None:
        self.start(self.model.num_timesteps)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.stop(self.model.num_timesteps)

    def rate(self) -> np.ndarray:
        """:return: steps per second, one entry per clock"""
        return self.steps / self.seconds


class Contestant(Protocol):
    """What a repetition times: one unit of work per :meth:`advance`."""

    def advance(self, clock: Clock) -> None:
        """Do one unit of work, timed (and its steps counted) by ``clock``."""

    def close(self) -> None:
        """Release the environments."""


RandomState = tuple[Any, Any, th.Tensor]


def global_random_state() -> RandomState:
    """:return: the state of the global generators SB3's ``set_random_seed`` seeds: Python's, NumPy's, torch's"""
    return random.getstate(), np.random.get_state(), th.get_rng_state()


def set_global_random_state(state: RandomState) -> None:
    """Restore the global generators to ``state`` (from :func:`global_random_state`)."""
    random.setstate(state[0])
    np.random.set_state(state[1])
    th.set_rng_state(state[2])


class Training:
    """
    A model as a contestant: one unit is one rollout + update, continuing its training.

    The model keeps random streams of its own: the global generators' state that its construction left (its seed, then
    its initialisation's draws) is swapped in before each of its units and saved after (untimed), so its draws are
    those of the same model trained alone, whatever the other contestants draw in between.
    """

    def __init__(self, model: BaseAlgorithm) -> None:
        self.model = model
        self.random_state = global_random_state()

    def advance(self, clock: Clock) -> None:
        set_global_random_state(self.random_state)
        # with reset_num_timesteps=False, learn(1) collects one rollout and makes one update, whatever its size
        self.model.learn(1, callback=clock, reset_num_timesteps=False)
        self.random_state = global_random_state()

    def close(self) -> None:
        self.model.get_env().close()  # type: ignore[union-attr]


def accepted(cls: type, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:return: the keyword arguments that ``cls``'s constructor takes (e.g. without PPOKL's ``kl_*`` for SB3's PPO)"""
    parameters = inspect.signature(cls).parameters
    return {key: value for key, value in kwargs.items() if key in parameters}


def training(cls: type, spec: RunSpec, seed: int, kwargs: Mapping[str, Any]) -> Callable[[], Training]:
    """:return: a factory of the model ``cls(spec.policy, env, seed=seed, **kwargs)`` on ``spec``'s environment"""

    def build() -> Training:
        env = make_env(dataclasses.replace(spec, seed=seed))
        return Training(cls(spec.policy, env, seed=seed, **kwargs))

    return build


def run_rounds(
    contestants: Mapping[str, Contestant], rounds: int, units: Mapping[str, int] | None = None, seed: int = 0
) -> dict[str, Clock]:
    """
    Advance every contestant once untimed, then ``rounds`` rounds, each in a turn order drawn at random.

    :param contestants: label -> contestant, in the order of the untimed advance
    :param units: label -> units per turn (default 1)
    :param seed: the seed of the turn orders (a generator of its own: the global RNGs the models draw from are not
        touched)
    :return: label -> the clock of its timed units
    """
    labels = list(contestants)
    for label in labels:
        contestants[label].advance(Clock())
    clocks = {label: Clock() for label in labels}
    order = np.random.default_rng(seed)
    for _ in range(rounds):
        turns = [labels[index] for index in order.permutation(len(labels))]
        gc.collect()
        gc.disable()
        try:
            for label in turns:
                for _ in range((units or {}).get(label, 1)):
                    contestants[label].advance(clocks[label])
        finally:
            gc.enable()
    return clocks


def run_repetition(
    factories: Mapping[str, Callable[[], Contestant]], repetition: int, rounds: int, units: Mapping[str, int] | None = None
) -> dict[str, Clock]:
    """
    Build the contestants in an order drawn at random (seeded by ``repetition``), time them with :func:`run_rounds`
    (turn orders seeded by ``repetition``), close them.

    :param factories: label -> a function that builds the contestant
    :return: label -> its clock, in the order of ``factories``
    """
    contestants = {label: factories[label]() for label in shuffled(list(factories), repetition)}
    # the contestants' own objects are never garbage: keep them out of the collector's scans
    gc.collect()
    gc.freeze()
    try:
        clocks = run_rounds(contestants, rounds, units, seed=repetition)
    finally:
        gc.unfreeze()
        for contestant in contestants.values():
            contestant.close()
    return {label: clocks[label] for label in factories}


def throughput_ratio(clocks: Mapping[str, Clock], label: str, peers: Iterable[str]) -> np.ndarray:
    """
    :return: steps per second of ``label`` over those of ``peers`` taken together (their steps over their seconds), one
        entry per clock; above 1: ``label`` is faster
    """
    peer_clocks = [clocks[peer] for peer in peers]
    peer_rate = sum(clock.steps for clock in peer_clocks) / sum(clock.seconds for clock in peer_clocks)
    return clocks[label].rate() / peer_rate


def summary(values: Sequence[float], digits: int = 4) -> Summary:
    """:return: the median, the interquartile range ``[q25, q75]`` and the values, rounded to ``digits``"""
    q25, median, q75 = (round(float(q), digits) for q in np.percentile(values, [25, 50, 75]))
    return median, [q25, q75], [round(float(value), digits) for value in values]


def clock_summaries(per_repetition: Sequence[np.ndarray], digits: int = 4) -> dict[str, Summary]:
    """
    :param per_repetition: one array per repetition, one entry per clock (as :func:`throughput_ratio` returns)
    :return: clock -> the :func:`summary` of its values
    """
    values = np.asarray(per_repetition, dtype=float).reshape(-1, len(CLOCKS))
    return {clock: summary(values[:, index].tolist(), digits) for index, clock in enumerate(CLOCKS)}


def cell(median: float, iqr: Sequence[float], fmt: str = ".3f") -> str:
    """:return: a table cell ``median (q25 to q75)``"""
    return f"{median:{fmt}} ({iqr[0]:{fmt}} to {iqr[1]:{fmt}})"


@dataclasses.dataclass(frozen=True)
class PairedExperiment:
    """
    A paired measurement as :func:`main` drives it.

    :param name: the module under ``benchmarks`` (``python -m benchmarks.<name>``); the results of the default profile go
        to ``benchmarks/results/<name>/``
    :param doc: the script's docstring (its ``--help``)
    :param profiles: profile name -> settings, each with ``repetitions`` and ``envs`` (``smoke``: the CI budget); the
        default profile is ``full``
    :param environments: the choices of ``--env``
    :param measure: (parsed arguments, profile settings, repetitions, environments) -> the content of ``results.json``
        besides the command and the versions (JSON types only)
    :param write_report: (content of ``results.json``, folder) -> the text printed at the end; writes ``results.md``
    :param write_figures: (content of ``results.json``, folder) -> None; after a measurement only (``--report-only``
        leaves the figures as they are)
    :param add_arguments: adds the script's own options to the parser
    :param packages: versions recorded beside ``benchmarks.common.software_versions``'s
    """

    name: str
    doc: str | None
    profiles: Mapping[str, Mapping[str, Any]]
    environments: Sequence[str]
    measure: Callable[[argparse.Namespace, Mapping[str, Any], int, list[str]], dict[str, Any]]
    write_report: Callable[[dict[str, Any], Path], str]
    write_figures: Callable[[dict[str, Any], Path], None] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    packages: tuple[str, ...] = ()


def merge_environments(previous: dict[str, Any], new: dict[str, Any], envs: list[str]) -> dict[str, Any]:
    """
    A measurement of some environments (``--env``) merged into the stored results: its rows replace those of the same
    environments, the other environments' rows stay, each with the command that measured it (``commands``, by
    environment) and, where the results count them by environment (a dict), its number of repetitions. Results of
    another protocol (rounds, or a single number of repetitions that differs) are replaced whole.

    :return: the merged content of ``results.json``
    """
    by_env = isinstance(previous.get("repetitions"), dict) and isinstance(new.get("repetitions"), dict)
    keys = ("rounds",) if by_env else ("repetitions", "rounds")
    same_protocol = all(previous.get(key) == new.get(key) for key in keys)
    if not same_protocol or "rows" not in previous:
        return new
    kept = [row for row in previous["rows"] if row["env"] not in envs]
    commands = previous.get("commands") or {row["env"]: previous["command"] for row in previous["rows"]}
    commands = {env: command for env, command in commands.items() if env not in envs} | dict.fromkeys(envs, new["command"])
    order = list(dict.fromkeys([*(row["env"] for row in previous["rows"]), *envs]))
    rows = sorted([*kept, *new["rows"]], key=lambda row: order.index(row["env"]))  # stable: the rows' order within an env
    notes = list(dict.fromkeys([*previous.get("notes", []), *new.get("notes", [])]))
    merged = {**new, "commands": {env: commands[env] for env in order if env in commands}, "rows": rows, "notes": notes}
    if by_env:
        repetitions = {**previous["repetitions"], **new["repetitions"]}
        merged["repetitions"] = {env: repetitions[env] for env in order if env in repetitions}
    return merged


def commands_text(result: dict[str, Any]) -> str:
    """:return: the report's first line: the command, or the command of each environment after a partial rerun"""
    commands = result.get("commands") or {}
    if len(set(commands.values())) <= 1:
        return f"Command: `{result['command']}`"
    return "Commands: " + "; ".join(f"{env}: `{command}`" for env, command in commands.items())


def main(experiment: PairedExperiment, argv: list[str] | None = None) -> Path:
    """
    The command line of a paired measurement: measure (unless ``--report-only``), then report.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the results folder
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = experiment_parser(experiment.doc, experiment.profiles, "full")
    parser.add_argument(
        "--repetitions", type=int, default=None, help="repetitions of every environment (default: the profile's)"
    )
    parser.add_argument("--env", choices=experiment.environments, action="append", help="only these environments (repeatable)")
    if experiment.add_arguments is not None:
        experiment.add_arguments(parser)
    args = parser.parse_args(argv)
    name, out_dir = profile_and_output(args, experiment.name, {"full": RESULTS / experiment.name})
    path = out_dir / "results.json"
    if not args.report_only:
        profile = experiment.profiles[name]
        th.set_num_threads(1)
        envs = [env_id for env_id in profile["envs"] if not args.env or env_id in args.env]
        measured = experiment.measure(args, profile, args.repetitions or profile["repetitions"], envs)
        out_dir.mkdir(parents=True, exist_ok=True)
        versions = software_versions(experiment.packages)
        result = {"command": command_line(experiment.name, argv), "versions": versions, **measured}
        if args.env and path.exists():
            result = merge_environments(json.loads(path.read_text()), result, envs)
        path.write_text(json.dumps(result, indent=2) + "\n")
        if experiment.write_figures is not None:
            experiment.write_figures(json.loads(path.read_text()), out_dir)
    if not path.exists():
        raise SystemExit(f"nothing to report: no results.json in {out_dir}")
    print(experiment.write_report(json.loads(path.read_text()), out_dir))
    print(f"results: {out_dir}", file=sys.stderr)
    return out_dir
