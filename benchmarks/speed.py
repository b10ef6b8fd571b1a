"""End-to-end training speed: environment steps per second of ``learn`` (rollout + update), against the peers.

PPOClip and PPOKL against SB3's PPO, TRPOKL against sb3-contrib's TRPO, REINFORCE against itself with ``fast=False``
(the standard SB3 code path, where the constructor has that argument), and, for context, SB3's A2C and SBX's PPO
(JAX; where ``sbx-rl`` is installed) against SB3's PPO. Each at its default diagnostics level, in this one process
with one torch thread, on:

- CartPole-v1 with the zoo settings: each algorithm's own entry (PPO: rl-zoo3's, 8 envs, n_steps 32, batch 256,
  20 epochs; A2C and TRPO: rl-zoo3's; ours: this package's files);
- HalfCheetah-v5 with the PPO paper's settings for every PPO (``common.PAPER_ENTRY``, without PPOKL's own arguments:
  1 env, 2048 steps, minibatch 64, 10 epochs), rl-zoo3's MuJoCo TRPO settings for TRPO and TRPOKL, rl-zoo3's
  HalfCheetah-v4 entry for A2C and REINFORCE's own default entry.

Design: the paired, interleaved measurement of ``benchmarks.overhead`` (``benchmarks.paired``), end to end. Each
repetition builds every model with the same seed, in a construction order drawn at random for each repetition, makes one
untimed update each, then runs rounds: in each round every model makes its fixed number of updates (about half a
second of training on CartPole-v1, one update on HalfCheetah-v5) in turn, in a turn order drawn at random for each
round, so a shared machine's drifts hit every model alike. An update is ``learn(1, reset_num_timesteps=False)``:
exactly one rollout + update, timed from the training-start to the training-end callback event (model construction and
``learn``'s set-up are not counted), its steps counted from ``num_timesteps``. Throughput is steps over seconds of a
repetition, by CPU time (``time.process_time``, every thread of the process: JAX runs several) and by wall clock
(``time.perf_counter``).

Reported, median and interquartile range over repetitions:

- the ratio to the peer: steps per second over the peer's (above 1: faster). SB3's PPO is built twice (same seed,
  exactly the same work); the others are divided by the two copies together, and the ``control`` row (the copy over
  the original) is the resolution of the measurement on this machine (1.00 +- 0.03 on a quiet one);
- the fraction of the floor: steps per second over those of the algorithm's environment stack alone (SB3's
  ``DummyVecEnv`` of ``Monitor``-wrapped environments, plus ``VecNormalize`` where the zoo normalises, as
  ``rl_zoo3.train`` builds it) stepped with uniform-random actions in the same rounds; the raw gymnasium
  environment (``gymnasium.make``, random actions) is reported beside it. The floor is the speed of an algorithm
  that cost nothing.

The zoo's ``lin_`` schedules are held at their initial value (a schedule's progress means nothing for updates out
of a training's context).

    python -m benchmarks.speed                    # profile full: 16 / 8 repetitions of 4 rounds, both environments
    python -m benchmarks.speed --env CartPole-v1 --repetitions 2   # a part
    python -m benchmarks.speed --smoke            # CI smoke test (seconds)
    python -m benchmarks.speed --report-only      # results.md from results.json

Results (``results.json``, ``results.md``, ``speed.png``: the CPU-time ratio to the peer with its IQR, a line at 1,
and the floor as a ratio to the same peer) go to ``benchmarks/results/speed/`` (profile full) or a new temporary
folder (``--smoke``); ``--output`` elsewhere. ``--report-only`` rewrites ``results.md`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from benchmarks import paired
from benchmarks.common import PAPER_ENTRY, zoo_entry, zoo_kwargs
from benchmarks.paired import (
    CLOCKS,
    Clock,
    Contestant,
    PairedExperiment,
    accepted,
    cell,
    clock_summaries,
    commands_text,
    run_repetition,
    throughput_ratio,
    training,
)
from benchmarks.runner import RunSpec, algorithm_class, algorithm_name, make_env, normalized, spec_from_zoo
from sb3_ppo_variants.zoo import ZOO_ALGOS

REFERENCE = algorithm_name("ppo")  # PPO (SB3)
CONTROL = f"{REFERENCE}, copy"
TRPO = algorithm_name("trpo")
STANDARD = "REINFORCE, fast=False"
SBX = "PPO (SBX)"
SBX_CLASS = "sbx:PPO"
# row -> (its class: one of our zoo keys, a key of runner.PEERS or "module:Class"; the rows it is divided by)
MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    REFERENCE: ("ppo", ()),
    CONTROL: ("ppo", (REFERENCE,)),
    "PPOClip": ("ppo_clip", (REFERENCE, CONTROL)),
    "PPOKL": ("ppo_kl", (REFERENCE, CONTROL)),
    TRPO: ("trpo", ()),
    "TRPOKL": ("trpo_kl", (TRPO,)),
    STANDARD: ("reinforce", ()),
    "REINFORCE": ("reinforce", (STANDARD,)),
    algorithm_name("a2c"): ("a2c", (REFERENCE, CONTROL)),
    SBX: (SBX_CLASS, (REFERENCE, CONTROL)),
}
# where a class's settings come from, by environment: (zoo key, entry id); a class not listed: its own entry
SETTINGS: dict[str, dict[str, tuple[str, str | None]]] = {
    "CartPole-v1": {"ppo": ("ppo", None), SBX_CLASS: ("ppo", None), "a2c": ("a2c", None), "trpo": ("trpo", None)},
    "HalfCheetah-v5": {
        # the PPO paper's settings (without PPOKL's own arguments for the others)
        **{key: PAPER_ENTRY for key in ("ppo", "ppo_clip", "ppo_kl", SBX_CLASS)},
        "trpo": ("trpo", "HalfCheetah-v4"),
        "a2c": ("a2c", "HalfCheetah-v4"),
    },
}
RAW = "floor: gymnasium env"
# what a row reports, with its digits: steps per second, the ratio to the peers, the fraction of the floor, the floor's
# ratio to the peers
QUANTITIES = {"steps_per_s": 1, "ratio": 4, "floor_fraction": 4, "floor_ratio": 4}
# updates per model and round: about half a second of training each on CartPole-v1, one update (1 to 4 s) on
# HalfCheetah-v5 (by class; not listed: 1)
UNITS = {
    "CartPole-v1": {"ppo": 4, "ppo_clip": 4, "ppo_kl": 4, SBX_CLASS: 8, "a2c": 50},
    "HalfCheetah-v5": {"a2c": 150},
}
# environment steps per round of each floor
FLOOR_STEPS = {"CartPole-v1": 10_000, "HalfCheetah-v5": 2_500}
PROFILES: dict[str, dict[str, Any]] = {
    # many repetitions of a few rounds: a model's speed depends a little on where its objects lie in memory, so each
    # repetition (new models) is one draw of that, on top of the machine's drifts that the rounds average
    # (CartPole-v1: 16; a repetition there times 16 updates of half a second, whose spread from one placement in memory
    # to the next is wider than HalfCheetah-v5's: with 8, its control's median wandered by up to 5 %)
    "full": {
        "repetitions": {"CartPole-v1": 16, "HalfCheetah-v5": 8},
        "rounds": 4,
        "units": UNITS,
        "floor_steps": FLOOR_STEPS,
        "envs": list(SETTINGS),
    },
    # smoke: the machinery only, each model's rollout cut to at most 64 steps per environment (minibatches to match),
    # without SBX
    "smoke": {
        "repetitions": 1,
        "rounds": 1,
        "units": {},
        "floor_steps": {"CartPole-v1": 200},
        "envs": ["CartPole-v1"],
        "max_n_steps": 64,
        "sbx": False,
    },
}


def has_fast(cls: Any) -> bool:
    """Whether ``cls`` has the fast path's switch (constructor argument ``fast``)."""
    return "fast" in inspect.signature(cls.__init__).parameters


def sbx_missing() -> str | None:
    """:return: why SBX's PPO cannot be built here, or None"""
    if importlib.util.find_spec("sbx") is None:
        return "not installed (pip install sbx-rl)"
    try:
        algorithm_class(SBX_CLASS)
    except Exception as error:  # an installed but broken JAX stack
        return f"not importable ({type(error).__name__}: {error})"
    return None


def model_spec(cls_key: str, env_id: str) -> RunSpec:
    """:return: the run of ``cls_key`` on ``env_id`` as ``rl_zoo3.train`` builds it from the entry of ``SETTINGS``"""
    zoo_key, entry_id = SETTINGS[env_id].get(cls_key, (cls_key, None))
    return spec_from_zoo(f"{cls_key}-{env_id}", cls_key, env_id, 0, zoo_entry(zoo_key, env_id, entry_id))


def model_kwargs(label: str, cls: type, spec: RunSpec) -> dict[str, Any]:
    """:return: the constructor arguments of the row ``label``"""
    kwargs = accepted(cls, zoo_kwargs(spec.kwargs, constant_schedules=True))
    if label == STANDARD and has_fast(cls):
        kwargs["fast"] = False
    activation = (kwargs.get("policy_kwargs") or {}).get("activation_fn")
    if cls.__module__.startswith("sbx") and activation is not None:  # a torch module: SBX takes flax's function
        import flax.linen

        kwargs["policy_kwargs"] = {
            **kwargs["policy_kwargs"],
            "activation_fn": getattr(flax.linen, activation.__name__.lower()),
        }
    return kwargs


def stack_name(spec: RunSpec) -> str:
    """:return: the floor row of ``spec``'s environment stack"""
    envs = f"{spec.n_envs} env{'s' if spec.n_envs > 1 else ''}"
    return f"floor: {envs}, Monitor, DummyVecEnv{', VecNormalize' if normalized(spec) else ''}"


class RandomActions:
    """An environment (a gymnasium one or an SB3 ``VecEnv``) stepped with uniform-random actions: ``steps`` a unit."""

    def __init__(self, make: Callable[[], gym.Env | VecEnv], steps: int, seed: int) -> None:
        self.env = env = make()
        self.n_envs = env.num_envs if isinstance(env, VecEnv) else 1
        self.calls = max(1, steps // self.n_envs)
        env.action_space.seed(seed)
        if isinstance(env, VecEnv):
            env.reset()  # make_vec_env seeded it
        else:
            env.reset(seed=seed)

    def advance(self, clock: Clock) -> None:
        env, space = self.env, self.env.action_space
        clock.start()
        if isinstance(env, VecEnv):  # resets by itself
            for _ in range(self.calls):
                env.step(np.array([space.sample() for _ in range(self.n_envs)]))
        else:
            for _ in range(self.calls):
                _, _, terminated, truncated, _ = env.step(space.sample())
                if terminated or truncated:
                    env.reset()
        clock.stop(self.calls * self.n_envs)

    def close(self) -> None:
        self.env.close()


def shortened(kwargs: dict[str, Any], max_n_steps: int | None) -> dict[str, Any]:
    """:return: ``kwargs`` with ``n_steps`` at most ``max_n_steps`` and ``batch_size`` at most ``n_steps`` (smoke runs)"""
    if max_n_steps is None or kwargs.get("n_steps") is None:
        return kwargs
    n_steps = min(kwargs["n_steps"], max_n_steps)
    batch_size = kwargs.get("batch_size")
    return {**kwargs, "n_steps": n_steps} | ({"batch_size": min(batch_size, n_steps)} if batch_size else {})


def contestants(
    env_id: str, labels: list[str], floor_steps: int, max_n_steps: int | None = None
) -> Callable[[int], dict[str, Callable[[], Contestant]]]:
    """:return: seed -> the factories of the models ``labels`` and of the floors (the raw env and each model's stack)"""
    specs = {label: model_spec(MODELS[label][0], env_id) for label in labels}
    classes = {label: algorithm_class(MODELS[label][0]) for label in labels}
    kwargs = {label: shortened(model_kwargs(label, classes[label], specs[label]), max_n_steps) for label in labels}
    stacks = {stack_name(spec): spec for spec in specs.values()}

    def factories(seed: int) -> dict[str, Callable[[], Contestant]]:
        models = {label: training(classes[label], specs[label], seed, kwargs[label]) for label in labels}
        envs = {RAW: partial(gym.make, env_id)}
        envs |= {name: partial(make_env, dataclasses.replace(spec, seed=seed)) for name, spec in stacks.items()}
        return {**models, **{name: partial(RandomActions, make, floor_steps, seed) for name, make in envs.items()}}

    return factories


def run_env(env_id: str, profile: Mapping[str, Any], repetitions: int, labels: list[str], progress: tqdm) -> list[dict]:
    """:return: the rows of ``env_id``: the models ``labels``, then the floors"""
    factories = contestants(env_id, labels, profile["floor_steps"][env_id], profile.get("max_n_steps"))
    units = {label: profile["units"].get(env_id, {}).get(MODELS[label][0], 1) for label in labels}
    stacks = {label: stack_name(model_spec(MODELS[label][0], env_id)) for label in labels}
    # row -> quantity -> one value per repetition (an array of one entry per clock but for "steps")
    measured: dict[str, dict[str, list[Any]]] = {}
    for rep in range(repetitions):
        clocks = run_repetition(factories(rep), rep, profile["rounds"], units)
        for label, clock in clocks.items():
            values = measured.setdefault(label, {quantity: [] for quantity in ("steps", *QUANTITIES)})
            values["steps"].append(clock.steps)
            values["steps_per_s"].append(clock.rate())
            peers = MODELS[label][1] if label in MODELS else ()
            if peers:
                values["ratio"].append(throughput_ratio(clocks, label, peers))
                # the floor as a ratio to the same peers: the ratio of an algorithm that cost nothing
                values["floor_ratio"].append(throughput_ratio(clocks, stacks[label], peers))
            if label in stacks:
                values["floor_fraction"].append(throughput_ratio(clocks, label, [stacks[label]]))
        progress.update()
    rows = []
    for label, values in measured.items():
        row: dict[str, Any] = {"env": env_id, "row": label}
        if label in MODELS:
            cls = algorithm_class(MODELS[label][0])
            row |= {
                "class": f"{cls.__module__.split('.')[0]}.{cls.__name__}",
                "peers": list(MODELS[label][1]),
                "floor": stacks[label],
                "updates_per_repetition": profile["rounds"] * units[label],
                "fast_argument": has_fast(cls),
            }
        row["median_steps_per_repetition"] = int(np.median(values["steps"]))
        for quantity, digits in QUANTITIES.items():
            if values[quantity]:
                summaries = clock_summaries(values[quantity], digits)
                row[quantity] = {
                    clock: dict(zip(("median", "iqr", "values"), summaries[clock], strict=True)) for clock in CLOCKS
                }
        rows.append(row)
    return rows


def run(profile: Mapping[str, Any], repetitions: int | Mapping[str, int], envs: list[str]) -> tuple[list[dict], list[str]]:
    """:return: the rows and the notes of the report (what was left out)"""
    labels, notes = list(MODELS), []
    # the smoke profile leaves SBX out: importing JAX and compiling its PPO take most of a smoke run
    missing = "left out of this profile (JAX's import and compilation)" if not profile.get("sbx", True) else sbx_missing()
    if missing:
        labels.remove(SBX)
        notes.append(f"{SBX}: {missing}; its row is left out.")
    ours = [key for key, _ in MODELS.values() if key in ZOO_ALGOS]
    without = [algorithm_name(key) for key in dict.fromkeys(ours) if not has_fast(algorithm_class(key))]
    if without:
        notes.append(f"No `fast` constructor argument (the fast path) in: {', '.join(without)}.")
    if "REINFORCE" in without:
        notes.append(f"The {STANDARD} row therefore runs the same code as the REINFORCE row (a second control).")
    rows = []
    counts = repetitions_of(repetitions, envs)
    with tqdm(total=sum(counts.values()), desc="speed") as progress:
        for env_id in envs:
            rows += run_env(env_id, profile, counts[env_id], labels, progress)
    return rows, notes


def repetitions_of(repetitions: int | Mapping[str, int], envs: list[str]) -> dict[str, int]:
    """:return: the repetitions of each environment (``--repetitions``: the same number for all; else the profile's)"""
    return {env_id: repetitions if isinstance(repetitions, int) else repetitions[env_id] for env_id in envs}


def peer_name(peers: list[str]) -> str:
    """:return: the peers of a row as the report names them"""
    if list(peers) == [REFERENCE, CONTROL]:
        return f"{REFERENCE} (both copies)"
    return " + ".join(peers) or "—"


def _cell(row: dict, key: str, clock: str, fmt: str = ".3f") -> str:
    if key not in row:
        return "—"
    return cell(row[key][clock]["median"], row[key][clock]["iqr"], fmt)


def repetitions_text(repetitions: int | Mapping[str, int]) -> str:
    """:return: the number of repetitions, or each environment's"""
    if isinstance(repetitions, int) or len(set(repetitions.values())) == 1:
        return str(repetitions if isinstance(repetitions, int) else next(iter(repetitions.values())))
    return " / ".join(f"{count} ({env_id})" for env_id, count in repetitions.items())


def markdown(result: dict) -> str:
    lines = [
        "Steps per second of `learn` (rollout + update, set-up excluded), median (interquartile range) over "
        f"{repetitions_text(result['repetitions'])} repetitions. Ratio: steps/s over the peer's (above 1: faster); "
        "floor: steps/s over the algorithm's environment stack's alone (random actions).",
        "",
        "| env | row | peer | ratio to peer, CPU | ratio to peer, wall | fraction of floor, CPU "
        "| steps/s, CPU | steps/s, wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        peer = peer_name(row.get("peers", []))
        lines.append(
            f"| {row['env']} | {row['row']} | {peer} | {_cell(row, 'ratio', 'cpu')} | {_cell(row, 'ratio', 'wall')} "
            f"| {_cell(row, 'floor_fraction', 'cpu')} | {_cell(row, 'steps_per_s', 'cpu', '.0f')} "
            f"| {_cell(row, 'steps_per_s', 'wall', '.0f')} |"
        )
    notes = [f"- {note}" for note in result["notes"]]
    notes += [f"- control: `{CONTROL}` over `{REFERENCE}` (the same work): the resolution of the measurement."]
    return "\n".join([*lines, "", *notes])


def plot(result: dict, out_dir: Path) -> None:
    """Per environment: the CPU-time ratio to the peer (IQR as error bars), a line at 1, the floor as a ratio to the peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(row["env"] for row in result["rows"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        rows = [row for row in result["rows"] if row["env"] == env_id and "ratio" in row]
        x = np.arange(len(rows))
        medians = np.array([row["ratio"]["cpu"]["median"] for row in rows])
        iqr = np.array([row["ratio"]["cpu"]["iqr"] for row in rows])
        # bars from 1 (up: faster than the peer, down: slower) on a log scale, the IQR as error bars
        errors = [medians - iqr[:, 0], iqr[:, 1] - medians]
        ax.bar(x, medians - 1, bottom=1, color="tab:blue", yerr=errors, capsize=3, label="ratio to peer (CPU time)")
        floors = [row["floor_ratio"]["cpu"]["median"] for row in rows]
        ax.scatter(x, floors, marker="_", s=300, color="tab:red", zorder=3, label="env stack alone (floor)")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{row['row']}\n/ {peer_name(row['peers'])}" for row in rows], rotation=60, ha="right", fontsize=7)
        ax.set_title(env_id)
        ax.set_ylabel("steps per CPU second, ratio to peer")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "speed.png", dpi=110)
    plt.close(fig)


def write_report(result: dict, out_dir: Path) -> str:
    """Write ``results.md`` from the content of ``results.json``; :return: its text"""
    text = markdown(result)
    (out_dir / "results.md").write_text(f"{commands_text(result)}\n\n{text}\n")
    return text


def measure(
    args: argparse.Namespace, profile: Mapping[str, Any], repetitions: int | Mapping[str, int], envs: list[str]
) -> dict[str, Any]:
    rows, notes = run(profile, repetitions, envs)
    return {"repetitions": repetitions_of(repetitions, envs), "rounds": profile["rounds"], "notes": notes, "rows": rows}


EXPERIMENT = PairedExperiment(
    "speed", __doc__, PROFILES, list(SETTINGS), measure, write_report, write_figures=plot, packages=("sbx-rl", "jax")
)


def main(argv: list[str] | None = None) -> Path:
    """:return: the results folder"""
    return paired.main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
