"""Constructor-argument validation shared by every algorithm of the package.

SB3 checks some arguments with ``assert`` (which ``python -O`` removes) and others not at all, so bad
input can surface as a NaN or a crash deep inside training. Everything here runs in ``__init__``,
before an environment or a network is built, and raises ``TypeError`` (wrong type) or ``ValueError``
(wrong value) with a message that names the argument and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def check_int(name: str, value: Any, minimum: int | None = 1, allow_none: bool = False) -> None:
    """An integer (not a bool) >= ``minimum`` (no bound if None), or None when allowed."""
    if value is None and allow_none:
        return
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if allow_none else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_float(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> None:
    """A real number in the interval [low, high] (ends open when asked), finite unless ``allow_inf``."""
    if value is None and allow_none:
        return
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    allowed = f"a {'' if allow_inf else 'finite '}number in {interval}" + (" or None" if allow_none else "")
    if not _is_number(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_schedule(name: str, value: Any, allow_none: bool = False) -> None:
    """
    A positive finite number, or a schedule (a callable of the progress remaining, 1 -> 0) whose initial
    value ``value(1.0)`` is one (a linear schedule legitimately reaches 0 at the end of training).
    """
    if value is None and allow_none:
        return
    if callable(value):
        initial = value(1.0)
        if not _is_number(initial) or not math.isfinite(initial) or initial <= 0:
            raise ValueError(
                f"{name} must be a schedule whose initial value {name}(1.0) is a positive number, got {initial!r}"
            )
        return
    allowed = "a positive finite number or a schedule (callable)" + (" or None" if allow_none else "")
    if not _is_number(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """True or False (NumPy booleans accepted)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def number_of_envs(env: Any) -> int | None:
    """How many environments ``env`` will give (None when it cannot be known before it is built)."""
    if isinstance(env, VecEnv):
        return env.num_envs
    if isinstance(env, str | gym.Env):
        return 1
    return None


def check_rollout_size(n_steps: int, batch_size: int | None, normalize_advantage: bool, env: Any) -> None:
    """SB3's asserts on the rollout and minibatch sizes, as ValueErrors (advantage normalisation needs 2 samples)."""
    if normalize_advantage and batch_size is not None and batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 when normalize_advantage=True, got {batch_size}")
    n_envs = number_of_envs(env)
    if normalize_advantage and n_envs is not None and n_steps * n_envs < 2:
        raise ValueError(
            f"n_steps * n_envs must be >= 2 when normalize_advantage=True, got n_steps={n_steps}, n_envs={n_envs}"
        )


def check_common_on_policy(
    env: Any,
    learning_rate: Any,
    n_steps: Any,
    gamma: Any,
    gae_lambda: Any,
    normalize_advantage: Any,
    use_sde: Any,
    sde_sample_freq: Any,
    stats_window_size: Any,
    verbose: Any,
    seed: Any,
    batch_size: Any,
) -> None:
    """The arguments every on-policy algorithm of SB3 / sb3-contrib shares."""
    check_schedule("learning_rate", learning_rate)
    check_int("n_steps", n_steps)
    check_int("batch_size", batch_size)
    check_float("gamma", gamma, 0.0, 1.0)
    check_float("gae_lambda", gae_lambda, 0.0, 1.0)
    check_bool("normalize_advantage", normalize_advantage)
    check_bool("use_sde", use_sde)
    check_int("sde_sample_freq", sde_sample_freq, minimum=-1)
    check_int("stats_window_size", stats_window_size)
    check_int("verbose", verbose, minimum=0)
    check_int("seed", seed, minimum=0, allow_none=True)
    check_rollout_size(n_steps, batch_size, normalize_advantage, env)


def check_ppo_arguments(kwargs: Mapping[str, Any], clip_range_allows_none: bool = False) -> None:
    """
    Validate ``stable_baselines3.PPO``'s arguments.

    :param kwargs: the constructor's arguments by name (e.g. ``locals()`` at the top of ``__init__``)
    :param clip_range_allows_none: PPOKL accepts ``clip_range=None`` (no clipping)
    """
    check_common_on_policy(**{k: kwargs[k] for k in _COMMON})
    check_int("n_epochs", kwargs["n_epochs"])
    check_schedule("clip_range", kwargs["clip_range"], allow_none=clip_range_allows_none)
    check_schedule("clip_range_vf", kwargs["clip_range_vf"], allow_none=True)
    check_float("ent_coef", kwargs["ent_coef"])
    check_float("vf_coef", kwargs["vf_coef"], low=0.0)
    check_float("max_grad_norm", kwargs["max_grad_norm"], low=0.0, low_open=True, allow_inf=True)
    check_float("target_kl", kwargs["target_kl"], low=0.0, low_open=True, allow_none=True)


def check_trpo_arguments(kwargs: Mapping[str, Any]) -> None:
    """
    Validate ``sb3_contrib.TRPO``'s arguments.

    :param kwargs: the constructor's arguments by name (e.g. ``locals()`` at the top of ``__init__``)
    """
    check_common_on_policy(**{k: kwargs[k] for k in _COMMON})
    check_int("cg_max_steps", kwargs["cg_max_steps"])
    check_float("cg_damping", kwargs["cg_damping"], low=0.0)
    shrinking = kwargs["line_search_shrinking_factor"]
    check_float("line_search_shrinking_factor", shrinking, 0.0, 1.0, low_open=True, high_open=True)
    check_int("line_search_max_iter", kwargs["line_search_max_iter"])
    check_int("n_critic_updates", kwargs["n_critic_updates"])
    check_float("target_kl", kwargs["target_kl"], low=0.0, low_open=True)
    check_int("sub_sampling_factor", kwargs["sub_sampling_factor"])


_COMMON = (
    "env",
    "learning_rate",
    "n_steps",
    "gamma",
    "gae_lambda",
    "normalize_advantage",
    "use_sde",
    "sde_sample_freq",
    "stats_window_size",
    "verbose",
    "seed",
    "batch_size",
)
