"""The runner every benchmark experiment goes through (surrogates, zoo_table, step_size, reinforce_variance).

An experiment is a list of :class:`RunSpec` (algorithm, environment, seed, keyword arguments, steps). :func:`run_all`
trains them in parallel worker processes (up to the core count, one torch thread each), shows a progress bar and
writes each run's result to ``<output>/runs/<run_id>.json`` as soon as that run ends. A run whose file exists is
skipped, so an interrupted suite resumes where it stopped. Seeds are fixed by the specs; ``manifest.json`` records the
command, the software versions and every spec. A profile's ``reuse`` (folders under ``benchmarks/results``, e.g.
``["surrogates/medium"]``) names other profiles or experiments whose finished identical runs (same run id, same spec
but for labels and record keys, every wanted key recorded) are copied instead of being run again.

A run's JSON holds its spec, the wall time, every finished training episode as ``[timestep, return, length]``
(the Monitor wrapper's undiscounted return, before any normalisation), optionally logger values recorded once per
update (``record_keys``, e.g. ``train/policy_kl``) as ``[timestep, value]``, and optionally a final deterministic
evaluation; or, for a spec with a ``task``, whatever that function returns. Statistics use rliable (interquartile
mean, stratified bootstrap confidence intervals, performance profiles).

An experiment script describes itself as an :class:`Experiment` and hands it to :func:`main`, which implements the
command line shared by all of them (``benchmarks.common.experiment_parser``) plus ``--workers`` and ``--ray-address``.

Where the runs execute: local worker processes by default; the tasks of a Ray cluster when given its address
(``--ray-address``, else the ``RAY_ADDRESS`` environment variable; Ray is the optional extra ``ray``). A Ray task
computes the run's record and returns it; this process (the driver) writes the JSON, so resume, manifest and progress
bar are the same either way and the nodes need not share its file system (its code is shipped to them, see
:data:`RAY_RUNTIME_ENV`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes

import copy
import importlib
import json
import multiprocessing
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS,
    ZOO_ONLY_KEYS,
    command_line,
    experiment_parser,
    profile_and_output,
    software_versions,
    zoo_entry,
    zoo_kwargs,
)
from sb3_ppo_variants.zoo import ZOO_ALGOS

# the peers, by their rl-zoo3 keys: key -> (module, class, library); ours are the keys of ZOO_ALGOS
PEERS = {
    "ppo": ("stable_baselines3", "PPO", "SB3"),
    "a2c": ("stable_baselines3", "A2C", "SB3"),
    "trpo": ("sb3_contrib", "TRPO", "sb3-contrib"),
}
RANDOM = "random"  # a uniform-random policy: ``steps`` is then the number of episodes
#: the package's diagnostics (docs/diagnostics.md) that the experiments record once per update; a key an algorithm
#: does not log (``kl_coef`` outside PPOKL, ``clip_fraction`` without a clip range) is recorded as an empty list
DIAGNOSTIC_KEYS = (
    "train/policy_kl",
    "train/approx_kl",
    "train/kl_coef",
    "train/std",
    "train/ratio_mean",
    "train/ratio_std",
    "train/ratio_min",
    "train/ratio_max",
    "train/ess",
    "train/grad_norm",
    "train/clip_fraction",
)


@dataclass
class RunSpec:
    """
    One training run.

    :param run_id: unique file name of the run inside the experiment (no extension)
    :param algo: one of our zoo keys, a key of ``PEERS``, ``"module:Class"``, or ``"random"`` (uniform-random policy,
        ``steps`` episodes)
    :param kwargs: constructor keyword arguments in rl-zoo3's conventions (``benchmarks.common.zoo_kwargs``)
    :param normalize: ``VecNormalize`` keyword arguments (``True``: its defaults, ``False``: none)
    :param eval_episodes: deterministic evaluation episodes after training (0: none)
    :param record_keys: logger keys recorded once per update, e.g. ``("train/policy_kl",)``
    :param labels: free-form labels used by the reports (row name, profile, ...)
    :param task: ``"module:function"`` run instead of the training: ``function(spec) -> dict``, the run's result (e.g.
        an analysis of a model it trains with :func:`make_model`)
    :param options: parameters of ``task``
    """

    run_id: str
    algo: str
    env_id: str
    seed: int
    steps: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 1
    normalize: bool | dict[str, Any] = False
    policy: str = "MlpPolicy"
    eval_episodes: int = 0
    record_keys: tuple[str, ...] = ()
    labels: dict[str, Any] = field(default_factory=dict)
    task: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def _jsonable(value: Any) -> Any:
    """Classes and callables by name (``nn.Tanh`` -> ``"Tanh"``), anything else by ``repr``."""
    return getattr(value, "__name__", repr(value))


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """:return: ``spec`` in JSON types, as the records and the manifest store it"""
    return json.loads(json.dumps(asdict(spec), default=_jsonable))


def algorithm_class(algo: str) -> type:
    """:return: the class of ``RunSpec.algo``"""
    if algo in ZOO_ALGOS:
        module, name = ZOO_ALGOS[algo]
    elif algo in PEERS:
        module, name, _ = PEERS[algo]
    else:
        module, _, name = algo.partition(":")
    return getattr(importlib.import_module(module), name)


def algorithm_name(algo: str) -> str:
    """:return: the name of one of our zoo keys or of a peer's key in a report, e.g. ``PPOKL``, ``PPO (SB3)``"""
    if algo in PEERS:
        _, name, library = PEERS[algo]
        return f"{name} ({library})"
    return ZOO_ALGOS[algo][1]


def recorded(run: dict[str, Any], key: str) -> np.ndarray:
    """:return: a run's record of the logger key ``key``: rows ``[timestep, value]``, one per update (none if not logged)"""
    return np.asarray(run.get("records", {}).get(key, []), dtype=float).reshape(-1, 2)


def _make_recorder(record_keys: tuple[str, ...]):
    from stable_baselines3.common.callbacks import BaseCallback

    class Recorder(BaseCallback):
        """Episodes from the Monitor infos; logger values of the last update at each rollout start and at the end."""

        def __init__(self) -> None:
            super().__init__()
            self.episodes: list[list[float]] = []
            self.records: dict[str, list[list[float]]] = {key: [] for key in record_keys}
            self._last_read = -1

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                episode = info.get("episode")
                if episode is not None:
                    self.episodes.append([int(self.num_timesteps), float(episode["r"]), int(episode["l"])])
            return True

        def _read(self) -> None:
            # SB3 dumps (clears) the logger before train(), so at the next rollout start it holds that update's values
            values = self.model.logger.name_to_value
            if not record_keys or self.num_timesteps == self._last_read or "train/n_updates" not in values:
                return
            self._last_read = self.num_timesteps
            for key in record_keys:
                if key in values:
                    self.records[key].append([int(self.num_timesteps), float(values[key])])

        def _on_rollout_start(self) -> None:
            self._read()

        def _on_training_end(self) -> None:
            self._read()

    return Recorder()


def _random_episodes(spec: RunSpec) -> list[list[float]]:
    import gymnasium as gym

    env = gym.make(spec.env_id)
    env.action_space.seed(spec.seed)
    episodes, total = [], 0
    for episode in range(spec.steps):
        env.reset(seed=spec.seed if episode == 0 else None)
        done, ret, length = False, 0.0, 0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            ret, length, done = ret + float(reward), length + 1, terminated or truncated
        total += length
        episodes.append([total, ret, length])
    env.close()
    return episodes


def normalized(spec: RunSpec) -> bool:
    """Whether ``spec``'s environment is wrapped in ``VecNormalize`` (``normalize`` True or a dict, even an empty one)."""
    return spec.normalize is True or isinstance(spec.normalize, dict)


def make_env(spec: RunSpec) -> Any:
    """:return: the vectorised training environment of ``spec`` (``n_envs`` copies, ``VecNormalize`` if ``normalize``)"""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed)
    if normalized(spec):
        env = VecNormalize(env, **(spec.normalize if isinstance(spec.normalize, dict) else {}))
    return env


def make_model(spec: RunSpec, env: Any) -> Any:
    """:return: the model of ``spec`` on ``env``, its keyword arguments converted by ``benchmarks.common.zoo_kwargs``"""
    return algorithm_class(spec.algo)(spec.policy, env, seed=spec.seed, verbose=0, **zoo_kwargs(spec.kwargs))


def _train(spec: RunSpec) -> dict[str, Any]:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_env(spec)
    model = make_model(spec, env)
    recorder = _make_recorder(tuple(spec.record_keys))
    model.learn(spec.steps, callback=recorder)
    result: dict[str, Any] = {"episodes": recorder.episodes, "records": recorder.records}
    if spec.eval_episodes:
        eval_env = make_vec_env(spec.env_id, n_envs=1, seed=spec.seed + 10_000)
        if isinstance(env, VecNormalize):  # the training statistics, frozen, raw rewards (as rl-zoo3's enjoy)
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False, **_obs_kwargs(spec.normalize))
            eval_env.obs_rms = env.obs_rms
        returns, _ = evaluate_policy(
            model, eval_env, n_eval_episodes=spec.eval_episodes, deterministic=True, return_episode_rewards=True
        )
        result["eval"] = {"mean": float(np.mean(returns)), "std": float(np.std(returns)), "returns": list(map(float, returns))}
        eval_env.close()
    env.close()
    return result


def _run_task(spec: RunSpec) -> dict[str, Any]:
    module, _, name = spec.task.partition(":")
    return getattr(importlib.import_module(module), name)(spec)


def _obs_kwargs(normalize: bool | dict[str, Any]) -> dict[str, Any]:
    keys = ("norm_obs", "clip_obs", "epsilon", "norm_obs_keys")
    return {k: v for k, v in normalize.items() if k in keys} if isinstance(normalize, dict) else {}


def compute_record(spec: RunSpec) -> dict[str, Any]:
    """Run ``spec``: :return: its record (JSON types), what ``<run_id>.json`` holds. Executed in a worker process or a
    Ray task; writes nothing."""
    import torch as th

    th.set_num_threads(1)
    start = time.perf_counter()
    if spec.task:
        result = _run_task(spec)
    elif spec.algo == RANDOM:
        result = {"episodes": _random_episodes(spec)}
    else:
        result = _train(spec)
    return {
        "spec": spec_dict(spec),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **result,
    }


def write_record(record: dict[str, Any], run_dir: str | Path) -> str:
    """Write ``record`` to ``<run_dir>/<run_id>.json`` (atomically). :return: the run id"""
    run_id = record["spec"]["run_id"]
    path = Path(run_dir) / f"{run_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)
    return run_id


def run_one(spec: RunSpec, run_dir: str) -> str:
    """Run ``spec`` and write ``<run_dir>/<run_id>.json`` (atomically). Executed in a worker process."""
    return write_record(compute_record(spec), run_dir)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch as th

    th.set_num_threads(1)


RAY_ADDRESS_VAR = "RAY_ADDRESS"  # Ray's own variable (``ray.init`` reads it too)
RAY_EXTRA = "ray"  # the optional dependency: pip install "sb3-ppo-variants[ray]"
LOCAL = "local"  # the executor of runs in local worker processes (the manifest's ``executor``)
# Ray tasks: the driver's code (this package and ``benchmarks``, without the stored results) shipped to every node
# and put first on the workers' path, so they run the driver's version, not one installed there; one torch thread
RAY_RUNTIME_ENV: dict[str, Any] = {
    "py_modules": [str(Path(__file__).parent), str(Path(importlib.import_module("sb3_ppo_variants").__file__).parent)],
    "excludes": ["/results/", "__pycache__/"],
    "env_vars": {"OMP_NUM_THREADS": "1"},
}


def ray_address(option: str | None = None) -> str | None:
    """
    The Ray cluster to dispatch runs to: ``option`` (``--ray-address``), else ``RAY_ADDRESS``, else None (local worker
    processes). Any address ``ray.init`` takes: ``HOST:PORT`` of the head, ``ray://HOST:10001``, ``auto``.
    """
    address = option if option is not None else os.environ.get(RAY_ADDRESS_VAR, "")
    return address.strip() or None  # an empty --ray-address: local, whatever RAY_ADDRESS says


def executor(address: str | None) -> str:
    """:return: where runs execute, as the manifest records it: ``ray@<address>`` or ``local``"""
    return f"ray@{address}" if address else LOCAL


def import_ray(address: str) -> Any:
    """:return: the ``ray`` module; a clear error naming the option and the extra when Ray is not installed"""
    try:
        return importlib.import_module("ray")
    except ImportError as error:
        raise ImportError(
            f"--ray-address / {RAY_ADDRESS_VAR}={address!r}: dispatching runs to a Ray cluster needs Ray, which is not "
            f'installed: pip install "sb3-ppo-variants[{RAY_EXTRA}]" (or unset {RAY_ADDRESS_VAR} to run locally)'
        ) from error


def _run_local(todo: list[RunSpec], run_dir: Path, workers: int, progress: Any, failures: list[str]) -> None:
    if workers == 1:
        for spec in todo:
            run_one(spec, str(run_dir))
            progress.update()
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        futures = {pool.submit(run_one, spec, str(run_dir)): spec for spec in todo}
        for future in as_completed(futures):
            try:
                future.result()
            except Exception:
                failures.append(f"{futures[future].run_id}:\n{traceback.format_exc()}")
            progress.update()


def _run_ray(
    todo: list[RunSpec], run_dir: Path, address: str, workers: int | None, progress: Any, failures: list[str]
) -> None:
    """One Ray task (one CPU) per run, at most ``workers`` in flight (None: as many as the cluster schedules); each
    record is written here as soon as its task returns. Connects with :data:`RAY_RUNTIME_ENV` (Ray ships local folders
    only at that level), unless Ray is already initialised in this process: then with its own runtime environment."""
    ray = import_ray(address)
    connected = not ray.is_initialized()
    if connected:
        # a copy: ray.init replaces the folders of the dict it is given by the URIs of their uploads
        ray.init(address=address, runtime_env=copy.deepcopy(RAY_RUNTIME_ENV), logging_level="WARNING")
    try:
        task = ray.remote(num_cpus=1)(compute_record)
        queue = iter(todo)
        pending: dict[Any, RunSpec] = {}

        def submit() -> None:
            spec = next(queue, None)
            if spec is not None:
                pending[task.remote(spec)] = spec

        for _ in range(workers or len(todo)):
            submit()
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ref)
            try:
                write_record(ray.get(ref), run_dir)
            except Exception:
                failures.append(f"{spec.run_id}:\n{traceback.format_exc()}")
            progress.update()
            submit()
    finally:
        if connected:
            ray.shutdown()


def same_training(spec: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether a stored record is the training of ``spec``: the same in every field but ``record_keys`` and ``labels``"""
    ignored = ("record_keys", "labels")
    return {k: v for k, v in record["spec"].items() if k not in ignored} == {k: v for k, v in spec.items() if k not in ignored}


def reusable(spec: dict[str, Any], record: dict[str, Any]) -> bool:
    """
    Whether a finished record of another experiment or profile can stand for the run of ``spec``: the same run in
    every field but ``record_keys`` and ``labels`` (which change nothing in the training), and every key of ``spec``'s
    ``record_keys`` recorded by it.

    :param spec: the run, in JSON types (:func:`spec_dict`)
    :param record: the content of a ``<run_id>.json``
    """
    return same_training(spec, record) and set(spec["record_keys"]) <= set(record["spec"].get("record_keys", ()))


def reuse_records(specs: list[RunSpec], run_dir: Path, sources: Iterable[Path]) -> list[str]:
    """
    Copy into ``run_dir`` the finished runs of ``specs`` found in other run folders (the first :func:`reusable`
    record of the same run id), instead of running them again: each copy gets ``spec`` (its labels and record keys
    are this experiment's; keys recorded beyond them are kept) and ``reused_from`` (the file it was copied from).
    Runs already in ``run_dir`` are left as they are.

    :param sources: run folders (``<results>/runs``) of other profiles or experiments; missing ones are skipped
    :return: the ids of the copied runs
    """
    sources = [Path(source) for source in sources if Path(source).resolve() != Path(run_dir).resolve()]
    copied = []
    for spec in specs:
        if (Path(run_dir) / f"{spec.run_id}.json").exists():
            continue
        wanted = spec_dict(spec)
        for source in sources:
            path = source / f"{spec.run_id}.json"
            record = json.loads(path.read_text()) if path.exists() else None
            if record is not None and reusable(wanted, record):
                copied.append(write_record({**record, "spec": wanted, "reused_from": str(path)}, run_dir))
                break
    return copied


def set_aside_stale(specs: list[RunSpec], run_dir: Path) -> list[str]:
    """
    Move to ``run_dir/stale/`` the stored runs whose training differs from their spec's (an entry or a setting edited
    since they ran, e.g. a tuned zoo entry), so that they are run again; nothing is deleted.

    :return: the ids of the runs set aside
    """
    moved = []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")  # microseconds: never over an earlier one
    for spec in specs:
        path = run_dir / f"{spec.run_id}.json"
        if path.exists() and not same_training(spec_dict(spec), json.loads(path.read_text())):
            (run_dir / "stale").mkdir(exist_ok=True)
            path.rename(run_dir / "stale" / f"{spec.run_id}.{stamp}.json")
            moved.append(spec.run_id)
    return moved


def run_all(
    specs: list[RunSpec],
    run_dir: Path,
    workers: int | None = None,
    desc: str = "runs",
    ray_address: str | None = None,
    reuse_from: Iterable[Path] = (),
) -> list[str]:
    """
    Run every spec whose result file does not exist yet (or holds another training: set aside first,
    :func:`set_aside_stale`), ``workers`` at a time (default: the core count; on Ray, as
    many as the cluster schedules).

    :param ray_address: dispatch the runs to the Ray cluster at this address (see :func:`ray_address`) instead of
        local worker processes; the records come back here, where they are written
    :param reuse_from: run folders of other profiles or experiments whose finished identical runs are copied instead
        of being run (:func:`reuse_records`)
    :return: the ids of the runs computed by this call
    """
    ids = [spec.run_id for spec in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("run ids must be unique")
    run_dir.mkdir(parents=True, exist_ok=True)
    reuse_from = list(reuse_from)
    # first: a stale run in the folder would keep an identical finished run of another experiment from being copied
    stale = set_aside_stale(specs, run_dir)
    if stale:
        print(
            f"{len(stale)} stored runs were trained with other settings, set aside in {run_dir / 'stale'} and rerun: "
            f"{', '.join(stale)}",
            file=sys.stderr,
        )
    reused = reuse_records(specs, run_dir, reuse_from)
    if reused:
        print(f"{len(reused)} finished runs copied from {', '.join(map(str, reuse_from))}", file=sys.stderr)
    todo = [spec for spec in specs if not (run_dir / f"{spec.run_id}.json").exists()]
    failures: list[str] = []
    from tqdm import tqdm

    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc) as progress:
        if ray_address and todo:
            _run_ray(todo, run_dir, ray_address, workers, progress, failures)
        elif todo:
            _run_local(todo, run_dir, max(1, min(workers or os.cpu_count() or 1, len(todo))), progress, failures)
    if failures:
        raise RuntimeError("failed runs:\n" + "\n".join(failures))
    return [spec.run_id for spec in todo]


def write_manifest(
    out_dir: Path,
    experiment: str,
    command: str,
    profile: str,
    specs: list[RunSpec],
    extra: dict | None = None,
    refresh: bool = False,
    executor: str = LOCAL,
) -> None:
    """
    ``manifest.json``: the exact command of every invocation and where its runs executed, the software versions, every
    spec.

    :param refresh: ``--only``: the specs replace those of the same run id and the others stay, and the command that
        produced the table stays the profile's (the refresh is in the invocations)
    :param executor: where this invocation's runs execute (:func:`executor`: ``local`` or ``ray@<address>``)
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    new_specs = [spec_dict(spec) for spec in specs]
    if refresh and previous:
        replaced = {spec["run_id"] for spec in new_specs}
        new_specs = [*(spec for spec in previous.get("specs", []) if spec["run_id"] not in replaced), *new_specs]
    invocations = [
        *previous.get("invocations", []),
        {"command": command, "utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "executor": executor},
    ]
    manifest = {
        "experiment": experiment,
        "profile": profile,
        "command": previous.get("command", command) if refresh else command,
        "invocations": invocations,
        "versions": software_versions(),
        "cpu_count": os.cpu_count(),
        **(extra or {}),
        "specs": new_specs,
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def load_runs(run_dir: Path, ids: Iterable[str] | None = None) -> dict[str, dict]:
    """The stored runs by id (all of them, or only ``ids`` that exist)."""
    paths = sorted(run_dir.glob("*.json")) if ids is None else [run_dir / f"{i}.json" for i in ids]
    return {path.stem: json.loads(path.read_text()) for path in paths if path.exists()}


def final_score(run: dict, last: int = 100) -> float:
    """The mean return of the run's last ``last`` training episodes (the PPO paper's score)."""
    returns = [episode[1] for episode in run["episodes"][-last:]]
    return float(np.mean(returns)) if returns else float("nan")


def curve(run: dict, grid: np.ndarray, window: int = 10) -> np.ndarray:
    """At each timestep of ``grid``: the mean return of the last ``window`` episodes finished by then (NaN before)."""
    episodes = np.asarray(run["episodes"], dtype=float).reshape(-1, 3)
    ends = np.searchsorted(episodes[:, 0], grid, side="right")
    return np.array([episodes[max(0, n - window) : n, 1].mean() if n else np.nan for n in ends])


@contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """
    Seed NumPy's global generator for the block, then restore its state: rliable's bootstraps draw from it
    (``StratifiedBootstrap.update_indices`` calls ``np.random.choice``; the ``random_state`` it accepts does not reach
    those draws), so only this makes their intervals reproducible.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def interval_estimates(scores: dict[str, np.ndarray], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """
    rliable's IQM and mean with 95% stratified-bootstrap confidence intervals (reproducible: ``seed``).

    :param scores: name -> array (runs x tasks) of normalised scores
    """
    from rliable import library, metrics

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])

    with numpy_global_seed(seed):
        points, intervals = library.get_interval_estimates(scores, aggregate, reps=reps)
    return {
        name: {
            "iqm": float(points[name][0]),
            "iqm_ci": [float(intervals[name][0, 0]), float(intervals[name][1, 0])],
            "mean": float(points[name][1]),
            "mean_ci": [float(intervals[name][0, 1]), float(intervals[name][1, 1])],
        }
        for name in scores
    }


def plot_performance_profiles(scores: dict[str, np.ndarray], path: Path, reps: int = 2000) -> None:
    """rliable's score-distribution performance profiles (fraction of runs with normalised score > tau)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library, plot_utils

    low = min(float(np.nanmin(v)) for v in scores.values())
    taus = np.linspace(min(low, 0.0), 1.05, 81)
    with numpy_global_seed(0):  # create_performance_profile has no random_state argument
        profiles, cis = library.create_performance_profile(scores, taus, reps=reps)
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = dict(zip(scores, plt.cm.tab20(np.linspace(0, 1, max(len(scores), 2))), strict=False))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, colors=colors, ax=ax)
    ax.legend([plt.Line2D([0], [0], color=colors[name]) for name in scores], list(scores), fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def zoo_command(algo: str, env_id: str, seed: int, extra: str = "") -> str:
    """:return: the rl-zoo3 command that trains what a run of ``spec_from_zoo`` trains"""
    return f"python -m rl_zoo3.train --algo {algo} --env {env_id} --seed {seed}{extra}"


def zoo_run(
    algo: str,
    env_id: str,
    seed: int,
    steps: int | None = None,
    cap: int | None = None,
    entry_id: str | None = None,
    overrides: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    conf: tuple[str, dict[str, Any]] | None = None,
    run_id: str | None = None,
    **fields: Any,
) -> RunSpec:
    """
    The run ``{algo}-{env_id}-s{seed}`` of the unchanged zoo command (:func:`zoo_command`, ``-n`` where the budget is
    not the entry's), labelled with that command and the entry's budget (``zoo_steps``).

    :param steps: the budget (default: the entry's ``n_timesteps``, at most ``cap``)
    :param entry_id: the entry rl-zoo3 reads, where it is not ``env_id``'s own (``zoo_entry``)
    :param overrides: arguments replacing the entry's
    :param conf: an rl-zoo3 hyperparameter file of its own (``-conf``) and the entry it gives, instead of the
        algorithm's file
    :param run_id: the run's id, where it is not ``{algo}-{env_id}-s{seed}``
    :param fields: further :class:`RunSpec` fields (``eval_episodes``, ``record_keys``, ...)
    """
    entry = dict(conf[1]) if conf else zoo_entry(algo, env_id, entry_id)
    zoo_steps = int(float(entry.get("n_timesteps", 1e6)))
    if steps is None:
        steps = min(zoo_steps, cap) if cap else zoo_steps
    entry.update(overrides or {})
    extra = (f" -conf {conf[0]}" if conf else "") + (f" -n {steps}" if steps != zoo_steps else "")
    command = zoo_command(algo, entry_id or env_id, seed, extra)
    run_labels = {"command": command, "zoo_steps": zoo_steps, **(labels or {})}
    run_id = run_id or f"{algo}-{env_id}-s{seed}"
    return spec_from_zoo(run_id, algo, env_id, seed, entry, steps=steps, labels=run_labels, **fields)


def spec_from_zoo(run_id: str, algo: str, env_id: str, seed: int, entry: dict[str, Any], **fields: Any) -> RunSpec:
    """A run exactly as ``rl_zoo3.train`` builds it from ``entry`` (n_envs, VecNormalize with the algorithm's gamma,
    ``lin_`` schedules, policy_kwargs); ``steps`` defaults to the entry's ``n_timesteps``."""
    for unsupported in ("env_wrapper", "frame_stack", "callback", "vec_env_wrapper"):
        if unsupported in entry:
            raise ValueError(f"{algo}/{env_id}: zoo entry uses {unsupported}, not supported by this runner")
    normalize = entry.get("normalize", False)
    if isinstance(normalize, str):
        normalize = eval(normalize)
    if normalize:
        normalize = dict(normalize) if isinstance(normalize, dict) else {}
        if "gamma" in entry:
            normalize["gamma"] = entry["gamma"]
    fields.setdefault("steps", int(float(entry.get("n_timesteps", 1e6))))
    return RunSpec(
        run_id=run_id,
        algo=algo,
        env_id=env_id,
        seed=seed,
        kwargs={key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS},
        n_envs=int(entry.get("n_envs", 1)),
        normalize=normalize,
        policy=entry.get("policy", "MlpPolicy"),
        **fields,
    )


@dataclass(frozen=True)
class Experiment:
    """
    An experiment script as :func:`main` drives it.

    :param name: the module under ``benchmarks`` (``python -m benchmarks.<name>``)
    :param doc: the script's docstring (its ``--help``)
    :param profiles: profile name -> settings (``smoke``: the CI budget)
    :param default_profile: the profile without ``--profile``, the one of the committed results
    :param make_specs: settings -> the runs
    :param summarise: (stored runs, settings) -> the content of ``results.json`` (JSON types only)
    :param write_report: (content of ``results.json``, folder) -> the text printed at the end; writes the files that
        derive from ``results.json`` alone (``results.md``, ...), so that the committed results regenerate them
    :param write_figures: (stored runs, content of ``results.json``, folder) -> None; writes what needs the runs
        themselves (figures)
    :param folders: profile -> its folder, where not ``benchmarks/results/<name>/<profile>``
    :param row_key: row of ``results.json`` -> its (algorithm key, environment id), for experiments whose
        ``results.json`` is ``{"rows": [...], ...}`` with one row per cell: ``--only`` then refreshes some cells
    """

    name: str
    doc: str | None
    profiles: dict[str, dict[str, Any]]
    default_profile: str
    make_specs: Callable[[dict[str, Any]], list[RunSpec]]
    summarise: Callable[[dict[str, dict], dict[str, Any]], dict[str, Any]]
    write_report: Callable[[dict[str, Any], Path], str]
    write_figures: Callable[[dict[str, dict], dict[str, Any], Path], None] | None = None
    folders: dict[str, Path] = field(default_factory=dict)
    row_key: Callable[[dict[str, Any]], tuple[str, str]] | None = None


def _only(spec: RunSpec, cells: list[str]) -> bool:
    """Whether a spec belongs to one of the ``ALGO:ENV`` cells (``ALGO`` alone: every environment)."""
    return any(f"{spec.algo}:{spec.env_id}" == cell or spec.algo == cell for cell in cells)


def refresh_cells(experiment: Experiment, out_dir: Path, profile: dict[str, Any], cells: list[str]) -> None:
    """
    ``--only``: replace, in the stored ``results.json``, the rows of the cells that were just rerun (their runs are in
    ``runs/``) and keep every other row as it is (``runs/`` is not in the repository; the other cells are not rerun).
    """
    assert experiment.row_key is not None
    runs = {run_id: run for run_id, run in load_runs(out_dir / "runs").items() if _only(RunSpec(**run["spec"]), cells)}
    fresh = experiment.summarise(runs, profile)
    path = out_dir / "results.json"
    stored = json.loads(path.read_text()) if path.exists() else {**fresh, "rows": []}
    replaced = {experiment.row_key(row) for row in fresh["rows"]}
    kept = [row for row in stored["rows"] if experiment.row_key(row) not in replaced]
    order = {experiment.row_key(row): i for i, row in enumerate(stored["rows"])}
    stored["rows"] = sorted([*kept, *fresh["rows"]], key=lambda row: order.get(experiment.row_key(row), len(order)))
    path.write_text(json.dumps(stored, indent=1) + "\n")


def report(experiment: Experiment, out_dir: Path, profile: dict[str, Any], from_runs: bool = True) -> str:
    """
    Write the report of the results in ``out_dir``: from the stored runs when there are any (``results.json``, then
    the figures and the files derived from ``results.json``); else from ``results.json`` alone (the committed results:
    ``runs/`` is not in the repository), leaving the figures as they are.

    :param from_runs: False: from ``results.json`` alone even when runs are stored (after ``--only``)
    :return: the text to print
    """
    runs = load_runs(out_dir / "runs") if from_runs else {}
    path = out_dir / "results.json"
    if runs:
        path.write_text(json.dumps(experiment.summarise(runs, profile), indent=1) + "\n")
    elif path.exists():
        print(f"report regenerated from {path}, figures kept", file=sys.stderr)
    else:
        raise SystemExit(f"nothing to report: neither runs nor results.json in {out_dir}")
    # what results.json holds, not the objects it was written from: the committed file alone regenerates the same report
    result = json.loads(path.read_text())
    if runs and experiment.write_figures is not None:
        experiment.write_figures(runs, result, out_dir)
    return experiment.write_report(result, out_dir)


def main(experiment: Experiment, argv: list[str] | None = None) -> Path:
    """
    The command line of an experiment script: run the profile's missing runs (unless ``--report-only``), then report.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the folder of the results
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = experiment_parser(experiment.doc, experiment.profiles, experiment.default_profile)
    parser.add_argument(
        "--workers", type=int, default=None, help="parallel runs (default: the core count; on Ray: the cluster's CPUs)"
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help=f"run on the Ray cluster at ADDRESS (HOST:PORT of its head; default: ${RAY_ADDRESS_VAR}; neither, or an "
        "empty ADDRESS: local worker processes); results, resume and manifest stay on this machine",
    )
    if experiment.row_key is not None:
        parser.add_argument(
            "--only",
            nargs="+",
            metavar="ALGO[:ENV]",
            help="rerun only these cells and replace them in the stored results.json (the other rows are kept)",
        )
    args = parser.parse_args(argv)
    name, out_dir = profile_and_output(args, experiment.name, experiment.folders)
    profile = experiment.profiles[name]
    only = getattr(args, "only", None)
    if not args.report_only:
        specs = [spec for spec in experiment.make_specs(profile) if only is None or _only(spec, only)]
        if not specs:
            raise SystemExit(f"--only {only}: no run of profile {name!r} matches (ALGO or ALGO:ENV, e.g. ppo_kl:CartPole-v1)")
        command = command_line(experiment.name, argv)
        address = ray_address(args.ray_address)
        if address:
            import_ray(address)  # before anything is written
        write_manifest(
            out_dir,
            experiment.name,
            command,
            name,
            specs,
            {"profile_settings": profile},
            refresh=only is not None,
            executor=executor(address),
        )
        run_all(
            specs,
            out_dir / "runs",
            workers=args.workers,
            desc=f"{experiment.name}/{name}",
            ray_address=address,
            reuse_from=[RESULTS / folder / "runs" for folder in profile.get("reuse", ())],
        )
        if only is not None:
            refresh_cells(experiment, out_dir, profile, only)
            print(report(experiment, out_dir, profile, from_runs=False))
            return out_dir
    print(report(experiment, out_dir, profile))
    print(f"results: {out_dir}", file=sys.stderr)
    return out_dir
