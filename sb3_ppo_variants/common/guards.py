"""Numerical guards shared by every algorithm: non-finite data never reaches the weights unnoticed.

- ``nonfinite_step_skipped``: call it after ``backward()`` and gradient clipping; when the loss or the
  gradient norm is NaN/inf it zeroes the gradients, warns, counts the skip, and tells the caller not to
  call ``optimizer.step()``.
- ``nonfinite_observation_guard`` (and the ``GuardedRollouts`` mixin that applies it to SB3's
  ``collect_rollouts``): when the policy crashes on a non-finite observation during collection (torch
  refuses NaN distribution parameters), the error is re-raised with a message that says what happened
  and how to find the source (SB3's ``VecCheckNan``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm


def nonfinite_step_skipped(
    algorithm: Any, loss: float | th.Tensor, grad_norm: float | th.Tensor, optimizer: th.optim.Optimizer
) -> bool:
    """
    :param algorithm: the algorithm (its ``_n_nonfinite_steps`` counter is incremented on a skip)
    :param loss: the loss whose gradient was just computed (a scalar tensor, or its value when the caller already
        read it, which saves a device synchronisation per step)
    :param grad_norm: the global gradient norm (as returned by ``clip_grad_norm_``), tensor or value
    :param optimizer: the optimizer about to step
    :return: True if the step must be skipped (gradients already zeroed, warning issued)
    """
    loss_value, grad_norm_value = (x.item() if isinstance(x, th.Tensor) else float(x) for x in (loss, grad_norm))
    if math.isfinite(loss_value) and math.isfinite(grad_norm_value):
        return False
    algorithm._n_nonfinite_steps = getattr(algorithm, "_n_nonfinite_steps", 0) + 1
    warnings.warn(
        f"{type(algorithm).__name__}: non-finite loss or gradient (loss={loss_value}, grad_norm={grad_norm_value}), "
        "optimizer step skipped (weights unchanged)"
    )
    optimizer.zero_grad()
    return True


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
