"""Numerical guards shared by every algorithm: non-finite data never reaches the weights unnoticed.

- ``NonFiniteGuard``: one per model; call ``skipped(...)`` with the loss and gradient norm (or TRPO's surrogate,
  gradient and search direction) before a step; when one is NaN/inf it zeroes the gradients, warns, counts the
  skip, and tells the caller not to step.
- ``nonfinite_observation_guard`` (and the ``GuardedRollouts`` mixin that applies it to SB3's
  ``collect_rollouts``): when the policy crashes on a non-finite observation during collection (torch
  refuses NaN distribution parameters), the error is re-raised with a message that says what happened
  and how to find the source (SB3's ``VecCheckNan``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm


class NonFiniteGuard:
    """
    The numerical guard of every algorithm: before an optimizer step (or TRPO's policy step), check that the
    quantities it is made of are finite; if not, zero the gradients, warn, count the skip, and tell the caller
    to leave the weights as they are. Plain Python (pickled with the model); ``n_skipped`` is logged as
    ``train/nonfinite_steps``.

    :param owner: name used in the warnings (the algorithm's class name)
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.n_skipped = 0

    def skipped(self, what: str, *values: float | th.Tensor, optimizer: th.optim.Optimizer | None = None) -> bool:
        """
        :param what: what the values are, for the warning (e.g. "loss or gradient norm")
        :param values: scalars or tensors (a tensor is finite when all its elements are); tensors cost one
            device synchronisation each, so pass values the caller already read where it has them
        :param optimizer: its gradients are zeroed on a skip
        :return: True if a value is not finite: the step must be skipped (gradients zeroed, warning issued)
        """
        if all(_is_finite(value) for value in values):
            return False
        self.n_skipped += 1
        shown = ", ".join(
            f"{value.item() if isinstance(value, th.Tensor) and value.numel() == 1 else value}" for value in values
        )
        warnings.warn(f"{self.owner}: non-finite {what} ({shown}), step skipped (weights unchanged)")
        if optimizer is not None:
            optimizer.zero_grad()
        return True


def _is_finite(value: float | th.Tensor) -> bool:
    if isinstance(value, th.Tensor):
        return math.isfinite(value.item()) if value.numel() == 1 else bool(th.isfinite(value).all())
    return math.isfinite(value)


def gradient_norm(parameters: Iterable[th.nn.Parameter]) -> th.Tensor:
    """
    :param parameters: parameters whose ``.grad`` were filled by ``backward()``
    :return: the global L2 norm of their gradients (read only: the gradients are not modified)
    """
    norms = [th.linalg.vector_norm(p.grad) for p in parameters if p.grad is not None]
    return th.linalg.vector_norm(th.stack(norms)) if norms else th.tensor(0.0)


def _has_nonfinite(observation: Any) -> bool:
    if isinstance(observation, dict):
        return any(_has_nonfinite(value) for value in observation.values())
    array = np.asarray(observation)
    return np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all()


@contextmanager
def nonfinite_observation_guard(algorithm: OnPolicyAlgorithm) -> Iterator[None]:
    """Re-raise a ValueError of rollout collection with a clear message when the last observation is not finite."""
    try:
        yield
    except ValueError as error:
        if algorithm._last_obs is not None and _has_nonfinite(algorithm._last_obs):
            raise ValueError(
                f"{type(algorithm).__name__}: the environment returned a non-finite observation (NaN or inf) at "
                f"timestep {algorithm.num_timesteps}; the policy cannot act on it. Training stopped before any update "
                "used it (the weights are unchanged). Wrap the env in "
                "stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True) to find the step."
            ) from error
        raise


class GuardedRollouts(OnPolicyAlgorithm):
    """Mixin: a clear error when rollout collection fails on a non-finite observation."""

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> bool:
        with nonfinite_observation_guard(self):
            return super().collect_rollouts(*args, **kwargs)
