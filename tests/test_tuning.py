"""Tuning at scale and under faults: concurrent rl-zoo3 ``-optimize`` workers sharing one Optuna study.

Storages: PostgreSQL (tests marked ``postgres``; the server's URL is read from ``SB3_PPO_VARIANTS_POSTGRES_URL``,
e.g. as printed by ``bash .ci/postgres.sh``; without a reachable server they skip, and fail under ``CI=true``),
Optuna's journal file (no server) and SQLite (the single-machine default). Every worker is the unchanged
``python -m rl_zoo3.train ... -optimize --storage ... --study-name ...`` command, started with ``subprocess.Popen``.

rl-zoo3's ``--max-total-trials T`` (``MaxTrialsCallback`` over COMPLETE, PRUNED and RUNNING trials): a worker starts
a trial only while fewer than T are counted, checked before its first trial and after each one, so N concurrent
workers record between T and T + N - 1 counted trials (they may all pass the check at once), plus any FAIL trials.
The rl-zoo3 workers rely on ``sb3_ppo_variants.zoo.tuning.patch_experiment_manager`` (applied with the registration):
``--trial-id 0``, diverging trials ending PRUNED with a ``stop_reason``, concurrent start-up. See docs/tuning.md.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from sb3_ppo_variants.zoo import ZOO_ALGOS, algorithm_class, register
from sb3_ppo_variants.zoo.tuning import (
    STOP_REASON,
    NonFiniteTrainingError,
    NonFiniteTrialStop,
    fail_running_trials,
    load_storage,
)

integration = pytest.mark.integration  # starts rl-zoo3 workers (subprocesses)
POSTGRES_URL_VAR = "SB3_PPO_VARIANTS_POSTGRES_URL"
ALGOS = sorted(ZOO_ALGOS)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --max-total-trials counts
REPORTED = re.compile(r"Trial (\d+) (?:finished|pruned|failed)")
TIMEOUT = 600

# the cheapest meaningful trial: 256 steps (at least one rollout of the sampled n_steps) in one environment
# (-params n_envs:1, added last by optimize_args), one evaluation of two episodes, random sampling, no pruning, no plots
FAST = ["-n", "256", "--n-evaluations", "1", "--eval-episodes", "2", "--sampler", "random", "--pruner", "none"]
FAST += ["--no-optim-plots"]

# a custom environment with a broken reward, registered through rl-zoo3's --gym-packages
BAD_ENV = '''
import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class BadRewardCartPole(CartPoleEnv):
    """CartPole whose every reward is replaced by bad_reward (None: the usual reward)."""

    def __init__(self, bad_reward=None, **kwargs):
        super().__init__(**kwargs)
        self.bad_reward = bad_reward

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward if self.bad_reward is None else self.bad_reward, terminated, truncated, info


gym.register("BadRewardCartPole-v1", entry_point=BadRewardCartPole, max_episode_steps=500)
'''

# callbacks for the workers of the concurrency tests (written to the workers' folder, passed with -params callback:...)
TEST_CALLBACKS = """
import os
import time
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback


class Barrier(BaseCallback):
    \"\"\"Each worker's first trial waits, once training, until the file 'go' exists (all trials run at once).\"\"\"

    def _on_training_start(self):
        Path(f"ready-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while not Path("go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _on_step(self):
        return True


class TrainingStarted(BaseCallback):
    \"\"\"Says when the worker's trial trains, and makes it last (to kill the worker mid-trial).\"\"\"

    def _on_training_start(self):
        Path("training-started").touch()

    def _on_step(self):
        time.sleep(0.01)
        return True
"""


# ----- helpers ---------------------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip locally; under CI the PostgreSQL tests must run, so fail."""
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run against a real server)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_VAR, "").strip()
    if not url:
        unavailable(
            f"{POSTGRES_URL_VAR} is not set: no PostgreSQL server to test distributed tuning against "
            f'(start one with `bash .ci/postgres.sh` and export {POSTGRES_URL_VAR}="<the URL it prints>")'
        )
    shown = sqlalchemy.make_url(url).render_as_string(hide_password=True)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:
        unavailable(f"no PostgreSQL server reachable at {POSTGRES_URL_VAR}={shown}: {type(error).__name__}: {error}")
    return url


@pytest.fixture
def postgres_study(postgres_url):
    """A unique study name on the server; the study is deleted afterwards."""
    names: list[str] = []

    def new(prefix: str) -> str:
        names.append(f"test-{prefix}-{uuid.uuid4().hex[:10]}")
        return names[-1]

    yield new
    for name in names:
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SB3_PPO_VARIANTS_ZOO_HOOK"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@functools.cache
def cheap_seeds(algo: str, count: int, trials_per_worker: int = 2) -> tuple[int, ...]:
    """
    The ``count`` seeds (of 0..39) whose first trials are the cheapest for ``--sampler random --seed s``.

    rl-zoo3's search spaces span 8-4096 steps per rollout, 1-20 epochs and 64-256 units: on a shared CI machine a
    trial takes 0.5 s or 30 s depending on the seed. RandomSampler(seed) draws each worker's hyperparameters from
    its own stream, so the sampler is replayed here, in memory, with a rough cost model (only the speed depends on it).
    """
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    def cost(seed: int) -> float:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        total = 0.0
        for _ in range(trials_per_worker):
            kwargs = HYPERPARAMS_SAMPLER[algo](study.ask(), 2, 1, {})
            n_steps = kwargs.get("n_steps", 256)
            env_steps = n_steps * -(-500 // n_steps)  # whole rollouts of at least 500 steps (the reload's -n)
            repeats = kwargs.get("n_epochs") or kwargs.get("n_critic_updates") or 1
            net_arch = kwargs.get("policy_kwargs", {}).get("net_arch", {"pi": [64, 64]})
            width = sum(net_arch["pi"] if isinstance(net_arch, dict) else net_arch)
            total += env_steps * (1 + repeats * width / 64)
        return total

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return tuple(sorted(range(40), key=cost)[:count])
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)


def optimize_args(
    algo: str, storage: str, study: str, total: int, seed: int, env_id: str = "CartPole-v1", params: tuple[str, ...] = ()
) -> list[str]:
    args = ["-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "-optimize", "--storage", storage, "--study-name", study]
    return [*args, "--max-total-trials", str(total), "--seed", str(seed), "-f", "logs", *FAST, "-params", "n_envs:1", *params]


_STARTED: list[Worker] = []


@pytest.fixture(autouse=True)
def _no_leftover_workers():
    """Whatever a test asserts, none of its workers outlives it."""
    yield
    while _STARTED:
        process = _STARTED.pop().process
        if process.poll() is None:
            process.kill()
            process.wait()


class Worker:
    """One ``python ...`` subprocess, stdout and stderr in ``<cwd>/<name>.log``."""

    def __init__(self, args: list[str], cwd: Path, name: str) -> None:
        self.name = name
        self.log_path = cwd / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
            )
        _STARTED.append(self)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def reported(self) -> set[int]:
        """The trials whose end this worker's Optuna logged."""
        return {int(number) for number in REPORTED.findall(self.log)}

    def describe(self) -> str:
        return f"--- {self.name} (return code {self.process.returncode}):\n{self.log[-4000:]}"


def wait_all(workers: list[Worker], timeout: float = TIMEOUT, expect_success: bool = True) -> None:
    deadline = time.monotonic() + timeout
    try:
        for worker in workers:
            worker.process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        pytest.fail("workers timed out:\n" + "\n".join(w.describe() for w in workers))
    if expect_success:
        failed = [w for w in workers if w.process.returncode != 0]
        assert not failed, "\n".join(w.describe() for w in failed)


def wait_for(condition, workers: list[Worker], what: str) -> None:
    """Poll until ``condition()``; fail if a worker exits first or after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        exited = [w for w in workers if w.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()
            pytest.fail(f"waiting for {what}:\n" + "\n".join(w.describe() for w in workers))
        time.sleep(0.1)


def run_workers(args_list: list[list[str]], cwd: Path, prefix: str = "worker") -> list[Worker]:
    workers = [Worker(args, cwd, f"{prefix}{i}") for i, args in enumerate(args_list)]
    wait_all(workers)
    return workers


def check_study(storage: str, study_name: str, workers: list[Worker], total: int) -> list[optuna.trial.FrozenTrial]:
    """
    Every trial recorded once with a final state, none lost or duplicated: trial numbers are 0..n-1, each
    finished trial was reported by exactly one worker, and the count respects --max-total-trials.
    """
    study = optuna.load_study(study_name=study_name, storage=load_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials))), "trial numbers not unique and consecutive"
    assert all(t.state in FINISHED for t in trials), [(t.number, t.state.name) for t in trials]
    reported = [w.reported() for w in workers]
    for i, first in enumerate(reported):
        for second in reported[i + 1 :]:
            assert not first & second, f"trials reported by two workers: {first & second}"
    assert set().union(*reported) == {t.number for t in trials}, "a trial in the storage is missing from the logs or back"
    counted = [t for t in trials if t.state in COUNTED]
    assert total <= len(counted) <= total + len(workers) - 1, f"{len(counted)} counted trials for --max-total-trials {total}"
    assert all(t.params for t in trials), "a trial without sampled hyperparameters"
    return trials


def reload_trial(algo: str, storage: str, study_name: str, trial: optuna.trial.FrozenTrial, cwd: Path) -> None:
    """Train with the trial's hyperparameters through rl-zoo3's --trial-id route and check the saved config."""
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    folder = f"reload-{trial.number}"
    args = ["-m", "rl_zoo3.train", "--algo", algo, "--env", "CartPole-v1", "--storage", storage, "--study-name", study_name]
    args += [
        "--trial-id",
        str(trial.number),
        "-n",
        "500",
        "--eval-freq",
        "-1",
        "--seed",
        "0",
        "-f",
        folder,
        "-params",
        "n_envs:1",
    ]
    (worker,) = run_workers([args], cwd, prefix=f"reload-{trial.number}-")
    run_dir = cwd / folder / algo / "CartPole-v1_1"
    assert (run_dir / "CartPole-v1.zip").is_file(), worker.describe()
    # rl-zoo3 writes config.yml with yaml.dump (python tags for OrderedDict and activation classes)
    config = dict(yaml.load((run_dir / "CartPole-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader))
    expected = HYPERPARAMS_CONVERTER[algo](trial.params)
    scalars = {k: v for k, v in expected.items() if isinstance(v, int | float | str | bool)}
    assert scalars, expected
    assert {k: config.get(k) for k in scalars} == scalars, f"trial {trial.number}'s hyperparameters were not used"
    assert config["policy_kwargs"]["net_arch"] == expected["policy_kwargs"]["net_arch"]
    if algo == "ppo_kl":
        assert config["kl_target"] == trial.params["kl_target"]
        assert config["kl_controller"] == trial.params["kl_controller"]


# ----- distributed tuning on PostgreSQL ----------------------------------------------------------------------


@integration
@pytest.mark.postgres
@pytest.mark.parametrize("algo", ALGOS)
def test_concurrent_workers_share_one_postgres_study(tmp_path, postgres_url, postgres_study, algo):
    # three workers for ppo_kl; one for the others (same code path, cheaper), which also reloads trial 0
    n_workers, total = (3, 5) if algo == "ppo_kl" else (1, 1)
    study_name = postgres_study(algo)
    seeds = cheap_seeds(algo, n_workers, trials_per_worker=3 if n_workers > 1 else 1)
    if n_workers == 1:
        workers = run_workers([optimize_args(algo, postgres_url, study_name, total, seeds[0])], tmp_path)
    else:
        # every worker's first trial waits at a barrier once training: all N trials are RUNNING at the same moment
        (tmp_path / "zoo_test_callbacks.py").write_text(TEST_CALLBACKS)
        barrier = ("callback:'zoo_test_callbacks.Barrier'",)
        args = [optimize_args(algo, postgres_url, study_name, total, seed, params=barrier) for seed in seeds]
        workers = [Worker(a, tmp_path, f"worker{i}") for i, a in enumerate(args)]
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == n_workers, workers, "every worker in its first trial")
        study = optuna.load_study(study_name=study_name, storage=postgres_url)
        assert len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == n_workers
        (tmp_path / "go").touch()
        wait_all(workers)
        assert all(w.reported() for w in workers), "a worker ran no trial"
    trials = check_study(postgres_url, study_name, workers, total)
    best = optuna.load_study(study_name=study_name, storage=postgres_url).best_trial
    assert best.state == TrialState.COMPLETE and np.isfinite(best.value)
    reload_trial(algo, postgres_url, study_name, trials[best.number], tmp_path)


@integration
@pytest.mark.postgres
def test_worker_killed_mid_trial_leaves_the_study_consistent(tmp_path, postgres_url, postgres_study):
    (tmp_path / "zoo_test_callbacks.py").write_text(TEST_CALLBACKS)
    study_name = postgres_study("sigkill")
    total = 5
    seeds = cheap_seeds("ppo_kl", 3, trials_per_worker=3)
    victim_args = optimize_args(
        "ppo_kl", postgres_url, study_name, total, seeds[0], params=("callback:'zoo_test_callbacks.TrainingStarted'",)
    )
    victim = Worker(victim_args, tmp_path, "victim")
    survivors = [
        Worker(optimize_args("ppo_kl", postgres_url, study_name, total, seed), tmp_path, f"w{seed}") for seed in seeds[1:]
    ]

    # the victim is mid-trial once its first trial trains (and that trial is RUNNING in the storage)
    wait_for((tmp_path / "training-started").exists, [victim, *survivors], "the victim's first trial")
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    assert study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)), "no RUNNING trial while the victim trains"
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.wait(timeout=60)
    assert victim.process.returncode == -signal.SIGKILL

    wait_all(survivors)
    # the study loads; the killed worker's trial stays RUNNING (rl-zoo3's storage has no heartbeat) and counts
    # towards --max-total-trials; every other trial is finished and reported by exactly one worker
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    assert len(running) == 1, [(t.number, t.state.name) for t in trials]
    assert all(t.state in FINISHED for t in trials if t.number not in running)
    reported = [w.reported() for w in [victim, *survivors]]
    assert not reported[1] & reported[2]
    assert set().union(*reported) == {t.number for t in trials} - set(running)
    assert running[0] not in set().union(*reported)
    assert total <= sum(t.state in COUNTED for t in trials) <= total + 2
    assert study.best_trial.state == TrialState.COMPLETE

    # clean-up once the worker is known to be gone: its trial becomes FAIL (and stops counting)
    assert fail_running_trials(postgres_url, study_name) == running
    assert fail_running_trials(postgres_url, study_name) == []
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    assert study.trials[running[0]].state == TrialState.FAIL
    assert all(t.state in FINISHED for t in study.trials)


# ----- no server: journal file (shared file system) and SQLite (one machine) ------------------------------------


@integration
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_a_file_storage(tmp_path, kind):
    storage = str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    total = 3
    workers = run_workers([optimize_args("ppo_kl", storage, "s", total, seed) for seed in cheap_seeds("ppo_kl", 2)], tmp_path)
    check_study(storage, "s", workers, total)
    if kind == "journal":
        # the zoo's journal route: the file holds the study, readable without any server
        assert (tmp_path / "study.log").stat().st_size > 0


# ----- diverging trials --------------------------------------------------------------------------------------


def seeded_study(storage: str, study_name: str) -> None:
    """A study that already has one finished trial (an earlier, healthy worker's)."""
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=9.0, params={}, distributions={}))


@pytest.mark.parametrize("algo", ALGOS)
def test_guard_stops_training_on_non_finite_rewards_and_losses(algo):
    import gymnasium as gym

    algo_class = algorithm_class(algo)

    class BadReward(gym.Wrapper):
        def __init__(self, env, value):
            super().__init__(env)
            self.value = value

        def step(self, action):
            obs, _, terminated, truncated, info = self.env.step(action)
            return obs, self.value, terminated, truncated, info

    # NaN rewards stop at the first step; rewards of 1e30 are finite but overflow the losses, whose optimizer
    # steps the algorithm skips (with a warning): the guard stops after the first update
    for value, message in [(float("nan"), "non-finite reward"), (1e30, r"optimizer step\(s\) skipped")]:
        with warnings.catch_warnings(), pytest.raises(NonFiniteTrainingError, match=message):
            warnings.simplefilter("ignore")
            model = algo_class("MlpPolicy", BadReward(gym.make("CartPole-v1"), value), n_steps=64, seed=0)
            model.learn(256, callback=NonFiniteTrialStop())
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        NonFiniteTrialStop(max_nonfinite_steps=-1)


@integration
def test_diverging_trials_are_pruned_with_a_reason_and_the_study_goes_on(tmp_path):
    """
    Two broken set-ups, one worker each on a study that already holds a healthy trial 0: rewards 1e30 in
    training (finite rewards, non-finite losses: every optimizer step skipped; without the guard the trial would
    complete with its untrained policy's score), NaN rewards in evaluation only (Optuna would mark the NaN value
    FAIL, which --max-total-trials never counts: the worker would never stop). Each worker's two trials end
    PRUNED with the reason in ``stop_reason``, and the worker goes on to its next trial and exits cleanly.
    (NaN rewards in training stop at the first step: test_guard_stops_training_on_non_finite_rewards_and_losses.)
    """
    (tmp_path / "bad_env.py").write_text(BAD_ENV)
    cases = {
        "inf-loss": (["--env-kwargs", "bad_reward:1e30", "--eval-env-kwargs", "bad_reward:None"], "optimizer step(s) skipped"),
        "nan-eval": (
            ["--env-kwargs", "bad_reward:None", "--eval-env-kwargs", "bad_reward:float('nan')"],
            "non-finite evaluation",
        ),
    }
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    workers = {}
    for case, (extra, _) in cases.items():
        seeded_study(storage, case)
        args = optimize_args("ppo_kl", storage, case, total=3, seed=cheap_seeds("ppo_kl", 1)[0], env_id="BadRewardCartPole-v1")
        workers[case] = Worker([*args, "--gym-packages", "bad_env", *extra], tmp_path, case)
    wait_all(list(workers.values()))
    for case, (_, reason) in cases.items():
        trials = optuna.load_study(study_name=case, storage=storage).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED], workers[
            case
        ].describe()
        for trial in trials[1:]:
            assert reason in trial.user_attrs[STOP_REASON], (case, trial.user_attrs)
            assert re.search(rf"Trial {trial.number} pruned\. .*{re.escape(reason)}", workers[case].log), workers[
                case
            ].describe()
