"""Helpers to read SB3 rollout buffers without changing how SB3 samples from them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

Samples = RolloutBufferSamples | DictRolloutBufferSamples
Observations = th.Tensor | dict[str, th.Tensor]
#: the arrays besides the observations that SB3's ``RolloutBuffer.get`` and ``DictRolloutBuffer.get`` flatten
_FLATTENED = ("actions", "values", "log_probs", "advantages", "returns")


def ensure_flattened(buffer: RolloutBuffer | DictRolloutBuffer) -> None:
    """
    Make SB3 flatten the (n_steps, n_envs, ...) arrays of a full buffer into (n_steps * n_envs, ...), as its ``get``
    does before the first minibatch, without consuming NumPy's global random state: for SB3's own two classes, the
    statements of their ``get`` (``swap_and_flatten`` of the arrays ``_FLATTENED`` names); for any other class, its own
    ``get`` code, with the random state saved and restored around it.
    """
    if buffer.generator_ready:
        return
    if type(buffer) in (RolloutBuffer, DictRolloutBuffer):
        if isinstance(buffer.observations, dict):
            for key, obs in buffer.observations.items():
                buffer.observations[key] = buffer.swap_and_flatten(obs)
        else:
            buffer.observations = buffer.swap_and_flatten(buffer.observations)
        for name in _FLATTENED:
            buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
        buffer.generator_ready = True
    else:
        state = np.random.get_state()
        next(buffer.get(buffer.buffer_size * buffer.n_envs))
        np.random.set_state(state)


def iter_minibatches(buffer: RolloutBuffer | DictRolloutBuffer, batch_size: int) -> Iterator[tuple[np.ndarray, Samples]]:
    """
    Exactly what ``buffer.get(batch_size)`` yields (same permutation drawn from ``np.random``, same
    order), together with the flat indices of each minibatch, so that per-state quantities computed
    once per update (such as the old policy's distribution) can be looked up for the minibatch.

    :param buffer: a full rollout buffer
    :param batch_size: minibatch size
    :return: iterator of (indices, samples)
    """
    assert buffer.full, "the rollout buffer must be full"
    n_samples = buffer.buffer_size * buffer.n_envs
    indices = np.random.permutation(n_samples)
    ensure_flattened(buffer)
    start_idx = 0
    while start_idx < n_samples:
        batch_indices = indices[start_idx : start_idx + batch_size]
        yield batch_indices, buffer._get_samples(batch_indices)
        start_idx += batch_size


def flat_observations(buffer: RolloutBuffer | DictRolloutBuffer) -> Observations:
    """:return: every observation of a flattened buffer as tensor(s) on the buffer's device"""
    ensure_flattened(buffer)
    if isinstance(buffer.observations, dict):
        return {key: buffer.to_torch(obs) for key, obs in buffer.observations.items()}
    return buffer.to_torch(buffer.observations)


def policy_actions(actions: th.Tensor, action_space: spaces.Space) -> th.Tensor:
    """Buffer actions are stored as float; SB3 policies expect long, flat actions for Discrete spaces."""
    if isinstance(action_space, spaces.Discrete):
        return actions.long().flatten()
    return actions
