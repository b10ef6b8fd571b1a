"""Constructor-argument validation shared by every algorithm of the package.

Everything here runs in ``__init__``, before an environment or a network is built, and raises ``TypeError``
(wrong type) or ``ValueError`` (wrong value) with a message that names the argument and the allowed values.

PPOClip and PPOKL are drop-in replacements for ``stable_baselines3.PPO``, TRPOKL for ``sb3_contrib.TRPO``
(their *peers*), and the checks keep them so:

- every argument set the peer trains with is accepted, except for the deliberate differences listed below;
- where the peer rejects an argument with ``assert`` (its own, and those of SB3's ``FloatSchedule``, ``BaseAlgorithm``
  and ``ActorCriticPolicy``), the error is an :class:`ArgumentError`: a ``ValueError`` naming the argument that
  ``except AssertionError`` still catches (and that ``python -O`` does not remove);
- the peer's warnings are kept: the constructors run the peer's ``__init__``, which gives them (e.g. a
  ``batch_size`` that does not divide ``n_steps * n_envs``).

``tests/test_validation.py`` checks these three points against the peers themselves, argument set by argument set.

Deliberately stricter than the peer, which accepts the following and then crashes in ``learn``, or trains something
that is not the algorithm (these raise a plain ``TypeError``/``ValueError``, never an :class:`ArgumentError`):

- types: a bool where a number is expected (SB3 reads ``learning_rate=True`` as 1.0), a non-integer count or size,
  a non-bool flag (``normalize_advantage=1``), a schedule whose initial value is not a number;
- NaN anywhere, and infinity except where it means "no limit" (``clip_range``, ``clip_range_vf``, ``max_grad_norm``);
- values outside the argument's domain: ``gamma`` or ``gae_lambda`` outside [0, 1]; a constant ``learning_rate``
  <= 0 (a schedule may start at 0, e.g. a warm-up, but not below); ``clip_range`` <= 0; a negative ``vf_coef``;
  ``max_grad_norm`` <= 0 (0 zeroes every gradient, ``inf`` turns clipping off); ``target_kl`` <= 0;
  ``sde_sample_freq`` < -1; a negative ``verbose``; ``line_search_shrinking_factor`` outside (0, 1); and counts of 0
  that skip a step of the algorithm (``n_epochs``, ``cg_max_steps``, ``line_search_max_iter``, ``n_critic_updates``,
  ``sub_sampling_factor``);
- the checks run even with ``_init_setup_model=False``, where the peer defers its schedule asserts to ``_setup_model``.

PPOKL also accepts ``clip_range=None`` (no clipping), which PPO rejects: its one deliberate difference in signature.

Left to the peer's own code (same exception as the peer's, an ``AssertionError`` where it asserts): the rest of
``policy`` and ``policy_kwargs`` (e.g. ``CnnPolicy`` on non-image observations) and the action space of an
environment given by its id, which is only known once the environment is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

#: the action spaces of SB3's PPO and sb3-contrib's TRPO (``supported_action_spaces``)
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


class ArgumentError(ValueError, AssertionError):
    """
    A bad argument that the peer (SB3's PPO, sb3-contrib's TRPO) rejects with ``assert``: a ``ValueError`` whose
    message names the argument, and an ``AssertionError`` so that code written against the peer
    (``except AssertionError``, ``pytest.raises(AssertionError)``) behaves the same.
    """


class ArgumentTypeError(ArgumentError, TypeError):
    """An :class:`ArgumentError` for an argument of the wrong type, hence also a ``TypeError``."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    """A number the peer's comparisons accept (bools included: SB3 compares ``True > 1``)."""
    return isinstance(value, int | float | np.integer | np.floating | np.bool_)


def _truth(value: Any) -> bool | None:
    """``bool(value)`` as the peer's ``if value:`` sees it, None when it has no truth value (e.g. an array)."""
    try:
        return bool(value)
    except Exception:  # the peer fails on it too, with its own error
        return None


def check_int(name: str, value: Any, minimum: int | None = 1, allow_none: bool = False) -> None:
    """
    An integer (not a bool) >= ``minimum``, or None when allowed.

    :param name: the argument's name, for the message
    :param value: the argument
    :param minimum: the smallest allowed value (None: no bound)
    :param allow_none: accept None
    """
    if value is None and allow_none:
        return
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if allow_none else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _describe_interval(low: float, high: float, low_open: bool, high_open: bool, allow_inf: bool) -> str:
    finite = "" if allow_inf else "finite "
    if math.isinf(high) and not allow_inf:
        if math.isinf(low):
            return "a finite number"
        return f"a finite number {'>' if low_open else '>='} {low}"
    return f"a {finite}number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


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
    """
    A real number (not a bool) in the interval [low, high], finite unless ``allow_inf``, or None when allowed.

    :param name: the argument's name, for the message
    :param value: the argument
    :param low: lower bound
    :param high: upper bound
    :param low_open: exclude ``low``
    :param high_open: exclude ``high``
    :param allow_none: accept None
    :param allow_inf: accept an infinite value inside the interval (e.g. ``max_grad_norm=inf``: no clipping)
    """
    if value is None and allow_none:
        return
    allowed = _describe_interval(low, high, low_open, high_open, allow_inf) + (" or None" if allow_none else "")
    if not _is_number(value):
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _schedule_allowed(allow_none: bool) -> str:
    return "a positive finite number or a schedule (callable)" + (" or None" if allow_none else "")


def check_schedule(name: str, value: Any, allow_none: bool = False, allow_inf: bool = False) -> None:
    """
    A positive number, or a schedule: a callable of the progress remaining (1 -> 0) whose initial value
    ``value(1.0)`` is a finite number >= 0 (a warm-up starts at 0, a linear decay ends there).

    :param name: the argument's name, for the message
    :param value: the argument
    :param allow_none: accept None
    :param allow_inf: accept ``inf`` (no limit, e.g. a clip range)
    """
    if value is None and allow_none:
        return
    if callable(value):
        initial = value(1.0)
        if not _is_number(initial) or not math.isfinite(initial) or initial < 0:
            raise ValueError(
                f"{name} must be a schedule whose initial value {name}(1.0) is a finite number >= 0, got {initial!r}"
            )
        return
    message = f"{name} must be {_schedule_allowed(allow_none)}, got {value!r}" + (
        "; inf (no limit) is accepted too" if allow_inf else ""
    )
    if not _is_number(value):
        raise TypeError(message)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        raise ValueError(message)


def check_bool(name: str, value: Any) -> None:
    """
    True or False (NumPy booleans accepted).

    :param name: the argument's name, for the message
    :param value: the argument
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """
    One of ``choices``.

    :param name: the argument's name, for the message
    :param value: the argument
    :param choices: the allowed strings
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def number_of_envs(env: Any) -> int | None:
    """
    :param env: an environment, its id or a vectorized environment
    :return: how many environments ``env`` will give (None when it cannot be known before it is built)
    """
    if isinstance(env, VecEnv):
        return env.num_envs
    if isinstance(env, str | gym.Env):
        return 1
    return None


# ----- the peers' asserts, as ArgumentError -----------------------------------------------------------------


def _assert_float_schedule(name: str, value: Any) -> None:
    """SB3's ``FloatSchedule`` asserts that a schedule argument is a Python int or float, or a callable."""
    if not isinstance(value, float | int) and not callable(value):
        numpy = " (SB3's FloatSchedule takes Python floats and ints only)" if _is_number(value) else ""
        raise ArgumentTypeError(f"{name} must be {_schedule_allowed(False)}, got {value!r}{numpy}")


def _assert_env(env: Any) -> None:
    """``BaseAlgorithm.__init__``: a supported action space, and finite bounds for a Box (known for built envs only)."""
    if not isinstance(env, gym.Env | VecEnv):
        return
    action_space = env.action_space
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        names = ", ".join(space.__name__ for space in SUPPORTED_ACTION_SPACES)
        raise ArgumentError(f"env must have one of the action spaces {names}, got {action_space}")
    if isinstance(action_space, spaces.Box) and not np.all(np.isfinite([action_space.low, action_space.high])):
        raise ArgumentError(f"env must have a Box action space with finite bounds, got {action_space}")


def _assert_policy(policy: Any, policy_kwargs: Any, use_sde: Any) -> None:
    """``ActorCriticPolicy.__init__``: ``squash_output=True`` only with gSDE."""
    is_actor_critic = isinstance(policy, str) or (isinstance(policy, type) and issubclass(policy, ActorCriticPolicy))
    if is_actor_critic and isinstance(policy_kwargs, Mapping):
        if _truth(policy_kwargs.get("squash_output", False)) and _truth(use_sde) is False:
            raise ArgumentError(f"policy_kwargs may set squash_output=True only with use_sde=True, got use_sde={use_sde!r}")


def _assert_rollout_size(n_steps: Any, env: Any, normalize_advantage: Any) -> None:
    """PPO and TRPO: at least 2 samples per rollout when the advantages are normalised over it."""
    n_envs = number_of_envs(env)
    if _truth(normalize_advantage) and n_envs is not None and _is_real(n_steps) and not n_steps * n_envs > 1:
        raise ArgumentError(
            "n_steps * n_envs must be > 1 when normalize_advantage=True (the advantages are normalised), "
            f"got n_steps={n_steps!r}, n_envs={n_envs}"
        )


def _ppo_assertions(kwargs: Mapping[str, Any], clip_range_allows_none: bool) -> None:
    """Every ``assert`` that ``PPO.__init__`` (with ``_setup_model``) makes on its arguments, as an ArgumentError."""
    _assert_env(kwargs["env"])
    _assert_policy(kwargs["policy"], kwargs["policy_kwargs"], kwargs["use_sde"])
    batch_size = kwargs["batch_size"]
    if _truth(kwargs["normalize_advantage"]) and _is_real(batch_size) and not batch_size > 1:
        raise ArgumentError(
            f"batch_size must be > 1 when normalize_advantage=True (the advantages are normalised per minibatch), "
            f"got {batch_size!r}"
        )
    _assert_rollout_size(kwargs["n_steps"], kwargs["env"], kwargs["normalize_advantage"])
    _assert_float_schedule("learning_rate", kwargs["learning_rate"])
    if not (clip_range_allows_none and kwargs["clip_range"] is None):
        _assert_float_schedule("clip_range", kwargs["clip_range"])
    clip_range_vf = kwargs["clip_range_vf"]
    if clip_range_vf is not None:
        if isinstance(clip_range_vf, float | int) and not clip_range_vf > 0:
            raise ArgumentError(f"clip_range_vf must be positive, or None for no value clipping, got {clip_range_vf!r}")
        _assert_float_schedule("clip_range_vf", clip_range_vf)


def _trpo_assertions(kwargs: Mapping[str, Any]) -> None:
    """Every ``assert`` that ``TRPO.__init__`` (with ``_setup_model``) makes on its arguments, as an ArgumentError."""
    _assert_env(kwargs["env"])
    _assert_policy(kwargs["policy"], kwargs["policy_kwargs"], kwargs["use_sde"])
    _assert_rollout_size(kwargs["n_steps"], kwargs["env"], kwargs["normalize_advantage"])
    _assert_float_schedule("learning_rate", kwargs["learning_rate"])


# ----- the algorithms' arguments -----------------------------------------------------------------------------


def _check_on_policy(kwargs: Mapping[str, Any]) -> None:
    """The arguments that SB3's PPO and sb3-contrib's TRPO share."""
    check_schedule("learning_rate", kwargs["learning_rate"])
    check_int("n_steps", kwargs["n_steps"])
    check_int("batch_size", kwargs["batch_size"])
    check_float("gamma", kwargs["gamma"], 0.0, 1.0)
    check_float("gae_lambda", kwargs["gae_lambda"], 0.0, 1.0)
    check_bool("normalize_advantage", kwargs["normalize_advantage"])
    check_bool("use_sde", kwargs["use_sde"])
    check_int("sde_sample_freq", kwargs["sde_sample_freq"], minimum=-1)
    check_int("stats_window_size", kwargs["stats_window_size"], minimum=0)  # 0: no episode statistics
    check_int("verbose", kwargs["verbose"], minimum=0)
    check_int("seed", kwargs["seed"], minimum=0, allow_none=True)


def check_ppo_arguments(kwargs: Mapping[str, Any], clip_range_allows_none: bool = False) -> None:
    """
    Validate ``stable_baselines3.PPO``'s arguments: first the peer's own asserts (:class:`ArgumentError`), then the
    rest (``TypeError``/``ValueError``).

    :param kwargs: the constructor's arguments by name (e.g. ``locals()`` at the top of ``__init__``)
    :param clip_range_allows_none: PPOKL accepts ``clip_range=None`` (no clipping)
    """
    _ppo_assertions(kwargs, clip_range_allows_none)
    _check_on_policy(kwargs)
    check_int("n_epochs", kwargs["n_epochs"])
    check_schedule("clip_range", kwargs["clip_range"], allow_none=clip_range_allows_none, allow_inf=True)
    check_schedule("clip_range_vf", kwargs["clip_range_vf"], allow_none=True, allow_inf=True)
    check_float("ent_coef", kwargs["ent_coef"])
    check_float("vf_coef", kwargs["vf_coef"], low=0.0)
    check_float("max_grad_norm", kwargs["max_grad_norm"], low=0.0, low_open=True, allow_inf=True)
    check_float("target_kl", kwargs["target_kl"], low=0.0, low_open=True, allow_none=True)


def check_trpo_arguments(kwargs: Mapping[str, Any]) -> None:
    """
    Validate ``sb3_contrib.TRPO``'s arguments: first the peer's own asserts (:class:`ArgumentError`), then the
    rest (``TypeError``/``ValueError``).

    :param kwargs: the constructor's arguments by name (e.g. ``locals()`` at the top of ``__init__``)
    """
    _trpo_assertions(kwargs)
    _check_on_policy(kwargs)
    check_int("cg_max_steps", kwargs["cg_max_steps"])
    check_float("cg_damping", kwargs["cg_damping"], low=0.0)
    shrinking = kwargs["line_search_shrinking_factor"]
    check_float("line_search_shrinking_factor", shrinking, 0.0, 1.0, low_open=True, high_open=True)
    check_int("line_search_max_iter", kwargs["line_search_max_iter"])
    check_int("n_critic_updates", kwargs["n_critic_updates"])
    check_float("target_kl", kwargs["target_kl"], low=0.0, low_open=True)
    check_int("sub_sampling_factor", kwargs["sub_sampling_factor"])
