"""Helpers for hyperparameter tuning with rl-zoo3 (``-optimize``); see ``docs/tuning.md``.

- :class:`NonFiniteTrialStop`: a callback that stops a run with :class:`NonFiniteTrainingError` (a ``ValueError``)
  as soon as the environment returns a non-finite reward, the algorithm skipped a non-finite optimizer step
  (``train/nonfinite_steps``), or the model holds a non-finite weight. Without it, a trial whose every
  update was skipped *completes* with the score of a policy that never trained.
- :func:`patch_experiment_manager`: for this package's zoo keys, makes ``--trial-id 0`` work (rl-zoo3
  ignores it), adds the guard to every ``-optimize`` trial and turns a diverging trial (the guard's error, a
  NaN evaluation) into a PRUNED trial whose ``stop_reason`` user attribute says why.
- :func:`fail_running_trials` (also ``python -m sb3_ppo_variants.zoo.tuning``): rl-zoo3 creates its RDB
  storage without Optuna's heartbeat, so the trial of a worker killed by SIGKILL stays RUNNING forever;
  once that worker is known to be gone, this marks such trials FAIL.

Importing this module imports stable_baselines3 and optuna, not rl_zoo3.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import math
import random
import sys
import time
from types import ModuleType
from typing import Any

import numpy as np
import optuna
import torch as th
from optuna.trial import TrialState
from stable_baselines3.common.callbacks import BaseCallback

from sb3_ppo_variants.zoo.algos import ZOO_ALGOS
from sb3_ppo_variants.zoo.samplers import ZOO_HYPERPARAMS

_PATCHED = "_sb3_ppo_variants_tuning_patched"


class NonFiniteTrainingError(ValueError):
    """Training produced a non-finite reward, loss, gradient or weight (a ``ValueError``: rl-zoo3 prunes the trial)."""


class NonFiniteTrialStop(BaseCallback):
    """
    Stop training with :class:`NonFiniteTrainingError` when it has gone numerically wrong.

    Checks: every step, the rewards returned by the environment; before each rollout and at the end of
    training, the number of optimizer steps the algorithm skipped because the loss or gradient was not finite
    (``model.nonfinite_guard.n_skipped``, logged as ``train/nonfinite_steps``; models without it count as 0)
    and whether every policy parameter is finite.

    :param max_nonfinite_steps: how many skipped (non-finite) optimizer steps are tolerated
    :param verbose: verbosity level
    """

    def __init__(self, max_nonfinite_steps: int = 0, verbose: int = 0) -> None:
        super().__init__(verbose)
        if isinstance(max_nonfinite_steps, bool) or not isinstance(max_nonfinite_steps, int) or max_nonfinite_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be an int >= 0, got {max_nonfinite_steps!r}")
        self.max_nonfinite_steps = max_nonfinite_steps

    def _fail(self, what: str) -> None:
        raise NonFiniteTrainingError(f"{type(self.model).__name__} at step {self.num_timesteps}: {what}; training stopped")

    def _on_step(self) -> bool:
        rewards = self.locals.get("rewards")
        if rewards is not None and not np.all(np.isfinite(rewards)):
            self._fail(f"the environment returned a non-finite reward ({np.asarray(rewards).tolist()})")
        return True

    def _check_model(self) -> None:
        numerical_guard = getattr(self.model, "nonfinite_guard", None)  # sb3_ppo_variants.common.guards.NonFiniteGuard
        skipped = 0 if numerical_guard is None else int(numerical_guard.n_skipped)
        if skipped > self.max_nonfinite_steps:
            self._fail(f"{skipped} optimizer step(s) skipped because the loss or gradient was not finite")
        bad = [name for name, param in self.model.policy.named_parameters() if not bool(th.isfinite(param).all())]
        if bad:
            self._fail(f"non-finite weights in {', '.join(bad)}")

    def _on_rollout_start(self) -> None:
        self._check_model()

    def _on_training_end(self) -> None:
        self._check_model()


class TrialNumber(int):
    """A trial number that is truthy even when it is 0 (see :func:`patch_experiment_manager`)."""

    def __bool__(self) -> bool:
        return True


GUARD = f"{__name__}.NonFiniteTrialStop"
# user attribute of a trial pruned by the patched objective: why it was stopped
STOP_REASON = "stop_reason"
# rl-zoo3 workers started at once race to create the storage's tables and the study's user attributes:
# attempts of a worker's start-up (database errors before its first trial)
STARTUP_ATTEMPTS = 5


def patch_experiment_manager(exp_manager_module: ModuleType) -> None:
    """
    Patch ``rl_zoo3.exp_manager.ExperimentManager`` for this package's zoo keys only (idempotent):

    - ``--trial-id 0`` loads trial 0: rl-zoo3 loads a trial only ``if self.storage and self.study_name and
      self.trial_id``, so the id is wrapped in :class:`TrialNumber` before ``read_hyperparameters`` runs;
    - ``-optimize`` trials run with :class:`NonFiniteTrialStop` added to the callbacks, a trial that rl-zoo3
      prunes because of a ``ValueError`` (the guard's, or e.g. a distribution built from NaN logits) is
      re-raised as ``TrialPruned(reason)`` with the reason stored in the trial's ``stop_reason`` user
      attribute, and a non-finite final evaluation prunes the trial the same way (Optuna would mark a NaN
      value FAIL, and ``--max-total-trials`` does not count FAIL trials: a worker whose trials all return
      NaN would never stop);
    - workers started at the same moment on a new storage or study no longer die of a database error
      (Optuna's table creation and rl-zoo3's ``study.set_user_attr`` calls race: ``IntegrityError`` on
      PostgreSQL, ``OperationalError: table ... already exists`` on SQLite): before the first trial,
      ``hyperparameters_optimization`` is retried, and finds what the other worker created.
    """
    manager_class = exp_manager_module.ExperimentManager
    if getattr(manager_class, _PATCHED, False):
        return
    read_hyperparameters_original = manager_class.read_hyperparameters
    objective_original = manager_class.objective
    optimization_original = manager_class.hyperparameters_optimization

    @functools.wraps(read_hyperparameters_original)
    def read_hyperparameters(self: Any) -> Any:
        if self.algo in ZOO_ALGOS and self.trial_id is not None and not isinstance(self.trial_id, TrialNumber):
            self.trial_id = TrialNumber(self.trial_id)
        return read_hyperparameters_original(self)

    @functools.wraps(objective_original)
    def objective(self: Any, trial: optuna.Trial) -> float:
        if self.algo not in ZOO_ALGOS:
            return objective_original(self, trial)
        self._sb3_ppo_variants_trial_started = True
        specified = self.specified_callbacks
        specified = [] if specified is None else list(specified) if isinstance(specified, list) else [specified]
        if GUARD not in specified:
            self.specified_callbacks = [*specified, GUARD]
        # what the samplers see of the zoo entry (ref_policy set: they sample the reference term's beta)
        hyperparams = ZOO_HYPERPARAMS.set(dict(self._hyperparams))
        try:
            value = objective_original(self, trial)
        except optuna.TrialPruned as pruned:
            if isinstance(pruned.__cause__, ValueError):
                reason = f"{type(pruned.__cause__).__name__}: {pruned.__cause__}"
                trial.set_user_attr(STOP_REASON, reason)
                raise optuna.TrialPruned(reason) from pruned.__cause__
            raise
        finally:
            ZOO_HYPERPARAMS.reset(hyperparams)
        if not math.isfinite(value):
            reason = f"non-finite evaluation: mean return {value}"
            trial.set_user_attr(STOP_REASON, reason)
            raise optuna.TrialPruned(reason)
        return value

    @functools.wraps(optimization_original)
    def hyperparameters_optimization(self: Any) -> None:
        from sqlalchemy.exc import DBAPIError

        for attempt in range(STARTUP_ATTEMPTS):
            try:
                return optimization_original(self)
            except DBAPIError as error:
                # a concurrent worker created the same rows first; nothing was run yet: load what it created
                started = getattr(self, "_sb3_ppo_variants_trial_started", False)
                if self.algo not in ZOO_ALGOS or started or attempt == STARTUP_ATTEMPTS - 1:
                    raise
                print(f"concurrent start-up ({type(error.orig).__name__}), retrying", file=sys.stderr)
                time.sleep(0.2 + random.random())

    manager_class.read_hyperparameters = read_hyperparameters
    manager_class.objective = objective
    manager_class.hyperparameters_optimization = hyperparameters_optimization
    setattr(manager_class, _PATCHED, True)


def load_storage(storage: str) -> str | optuna.storages.BaseStorage:
    """The Optuna storage of an rl-zoo3 ``--storage`` value (a path ending in ``.log`` is a journal file)."""
    if storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    return storage


def fail_running_trials(storage: str, study_name: str, older_than: float = 0.0) -> list[int]:
    """
    Mark FAIL the RUNNING trials of a study that started more than ``older_than`` seconds ago.

    Only for trials whose worker is known to be gone (killed, machine lost): a trial still being run by a live
    worker would be failed too (that worker's ``tell`` then raises). rl-zoo3's ``--max-total-trials`` counts
    RUNNING trials but not FAIL ones, so after this a restarted worker runs the trials that are missing.

    :param storage: rl-zoo3's ``--storage`` value (database URL or journal ``.log`` path)
    :param study_name: the study
    :param older_than: seconds since the trial started
    :return: the numbers of the trials marked FAIL
    """
    study = optuna.load_study(study_name=study_name, storage=load_storage(storage))
    now = datetime.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if started is None or (now - started).total_seconds() >= older_than:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(trial.number)
    return failed


def main(argv: list[str] | None = None) -> None:
    """``python -m sb3_ppo_variants.zoo.tuning --storage URL --study-name NAME [--older-than SECONDS]``"""
    parser = argparse.ArgumentParser(
        prog="python -m sb3_ppo_variants.zoo.tuning",
        description="Mark FAIL the RUNNING trials left by killed rl-zoo3 workers.",
    )
    parser.add_argument("--storage", required=True, help="rl-zoo3's --storage (database URL or journal .log path)")
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--older-than", type=float, default=0.0, help="only trials started more than this many seconds ago")
    args = parser.parse_args(argv)
    try:
        failed = fail_running_trials(args.storage, args.study_name, args.older_than)
    except KeyError:
        raise SystemExit(f"no study named {args.study_name!r} in {args.storage}") from None
    print(f"marked FAIL: {failed}" if failed else "no RUNNING trial to fail")


if __name__ == "__main__":
    main()
