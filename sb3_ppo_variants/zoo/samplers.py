"""Optuna search spaces for rl-zoo3 (``-optimize``), one per zoo key.

Same signature as rl-zoo3's samplers: ``sample_x_params(trial, n_actions, n_envs, additional_args)``
returning converted keyword arguments; the matching converter turns a trial's raw ``params`` back
into keyword arguments (rl-zoo3's ``--trial-id`` route).

Importing this module does not import rl_zoo3 (its functions do): importing ``rl_zoo3.hyperparams_opt`` runs the
start-up hook's ``register_samplers``, which reads this module's tables, so they must exist before rl-zoo3 is imported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import optuna
from torch import nn

#: the package's knobs that go into ``policy_kwargs`` (the fixed-std option of ``sb3_ppo_variants.common.policies``)
_POLICY_KNOBS = ("learn_std", "log_std_init")
#: PPOKL's adaptive rule -> its explicit thresholds (multiples of kl_target) and factors; "paper": the defaults
_KL_RULES = {"rllib": dict(kl_min=0.5, kl_max=2.0, kl_factor_up=1.5, kl_factor_down=0.5)}
#: the hyperparameters of the zoo entry (with ``-params``) of the trial being sampled: set by the patched objective
#: (``zoo/tuning.py``), since rl-zoo3 passes the samplers no hyperparameters
ZOO_HYPERPARAMS: ContextVar[dict[str, Any]] = ContextVar("ZOO_HYPERPARAMS", default={})  # noqa: B039  # never mutated


def sample_knobs(trial: optuna.Trial, n_actions: int) -> dict[str, Any]:
    """
    The package's knobs that SB3's algorithms lack (raw, before conversion): time-limit truncation as termination,
    and for continuous actions (``n_actions > 0``, rl-zoo3's convention) a learned or fixed standard deviation and
    its initial value. A fixed std is the diagonal Gaussian's option: with a gSDE entry (``use_sde`` in the zoo
    hyperparameters, :data:`ZOO_HYPERPARAMS`) only the initial value is sampled.

    :param trial: the Optuna trial
    :param n_actions: the action dimension of a Box action space, 0 otherwise
    :return: the raw parameters
    """
    knobs: dict[str, Any] = {"truncation_as_terminal": trial.suggest_categorical("truncation_as_terminal", [False, True])}
    if n_actions > 0:
        if not ZOO_HYPERPARAMS.get().get("use_sde", False):
            knobs["learn_std"] = trial.suggest_categorical("learn_std", [True, False])
        knobs["log_std_init"] = trial.suggest_float("log_std_init", -2.0, 1.0)
    return knobs


def convert_knobs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """
    :param hyperparams: converted keyword arguments still holding raw knobs (``sample_knobs``, PPOKL's ``kl_rule``)
    :return: keyword arguments: the policy knobs moved into ``policy_kwargs``, ``kl_rule`` turned into PPOKL's arguments
    """
    hyperparams = dict(hyperparams)
    policy_knobs = {name: hyperparams.pop(name) for name in _POLICY_KNOBS if name in hyperparams}
    if policy_knobs:
        hyperparams["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), **policy_knobs}
    rule = _KL_RULES.get(hyperparams.pop("kl_rule", "paper"), {})
    for name, value in rule.items():
        hyperparams[name] = value * hyperparams["kl_target"] if name in ("kl_min", "kl_max") else value
    return hyperparams


def convert_onpolicy_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Converter for PPOKL, PPOClip and TRPOKL: rl-zoo3's on-policy converter, then ``convert_knobs``.

    :param sampled_params: a trial's raw parameters
    :return: keyword arguments
    """
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params as convert

    return convert_knobs(convert(sampled_params))


def sample_ppo_clip_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for PPOClip (SB3 PPO's maths): rl-zoo3's PPO search space, plus the package's knobs (``sample_knobs``).

    :param trial: the Optuna trial
    :return: keyword arguments for PPOClip
    """
    from rl_zoo3.hyperparams_opt import sample_ppo_params

    return convert_knobs({**sample_ppo_params(trial, n_actions, n_envs, additional_args), **sample_knobs(trial, n_actions)})


def sample_trpo_kl_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for TRPOKL (sb3-contrib TRPO's maths): rl-zoo3's TRPO search space, plus the package's knobs.

    :param trial: the Optuna trial
    :return: keyword arguments for TRPOKL
    """
    from rl_zoo3.hyperparams_opt import sample_trpo_params

    return convert_knobs({**sample_trpo_params(trial, n_actions, n_envs, additional_args), **sample_knobs(trial, n_actions)})


def sample_ppo_kl_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for PPOKL: rl-zoo3's PPO search space without ``clip_range`` (pure penalty), plus the
    penalty's target, the initial beta, the controller and the adaptive controller's rule (the paper's or RLlib's),
    plus the package's knobs (``sample_knobs``).

    :param trial: the Optuna trial
    :return: keyword arguments for PPOKL
    """
    batch_size_pow = trial.suggest_int("batch_size_pow", 5, 10)
    n_steps_pow = trial.suggest_int("n_steps_pow", 5, 12)
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    one_minus_gae_lambda = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    ent_coef = trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True)
    n_epochs = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2)
    net_arch = trial.suggest_categorical("net_arch", ["tiny", "small", "medium"])
    activation_fn = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    # the PPO paper's sweep used d_targ in {0.003, 0.01, 0.03} and initial beta 1
    kl_target = trial.suggest_float("kl_target", 0.001, 0.1, log=True)
    kl_coef = trial.suggest_float("kl_coef", 0.1, 10.0, log=True)
    kl_controller = trial.suggest_categorical("kl_controller", ["adaptive", "fixed", "proportional"])
    # the adaptive rule: the paper's (d_targ / 1.5, d_targ * 1.5, x2, /2) or RLlib's (d_targ / 2, 2 d_targ, x1.5, x0.5)
    kl_rule = trial.suggest_categorical("kl_rule", ["paper", "rllib"]) if kl_controller == "adaptive" else "paper"

    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("n_steps", 2**n_steps_pow)
    trial.set_user_attr("batch_size", 2**batch_size_pow)
    return convert_onpolicy_params(
        {
            "n_steps_pow": n_steps_pow,
            "batch_size_pow": batch_size_pow,
            "one_minus_gamma": one_minus_gamma,
            "one_minus_gae_lambda": one_minus_gae_lambda,
            "learning_rate": learning_rate,
            "ent_coef": ent_coef,
            "n_epochs": n_epochs,
            "max_grad_norm": max_grad_norm,
            "net_arch": net_arch,
            "activation_fn": activation_fn,
            "kl_target": kl_target,
            "kl_coef": kl_coef,
            "kl_controller": kl_controller,
            "kl_rule": kl_rule,
            **sample_knobs(trial, n_actions),
        }
    )


def convert_reinforce_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Converter for REINFORCE (rl-zoo3's on-policy converter assumes ``gae_lambda``, which REINFORCE has not).

    :param sampled_params: a trial's raw parameters
    :return: keyword arguments for REINFORCE
    """
    hyperparams = dict(sampled_params)
    hyperparams["gamma"] = 1 - hyperparams.pop("one_minus_gamma")
    hyperparams["n_steps"] = 2 ** hyperparams.pop("n_steps_pow")
    net_arch = {"tiny": dict(pi=[64], vf=[64]), "small": dict(pi=[64, 64], vf=[64, 64])}[hyperparams.pop("net_arch")]
    activation_fn = {"tanh": nn.Tanh, "relu": nn.ReLU}[hyperparams.pop("activation_fn")]
    return {"policy_kwargs": {"net_arch": net_arch, "activation_fn": activation_fn}, **hyperparams}


def sample_reinforce_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for REINFORCE: batch size in transitions of complete episodes, learning rates, discount,
    the baseline (and the value baseline's fitting), reward-to-go and advantage normalisation.

    :param trial: the Optuna trial
    :return: keyword arguments for REINFORCE
    """
    sampled: dict[str, Any] = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 9, 14),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.05, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "baseline": trial.suggest_categorical("baseline", ["none", "mean", "value", "optimal", "rloo", "rloo_std", "time"]),
        "reward_to_go": trial.suggest_categorical("reward_to_go", [True, False]),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [True, False]),
        "value_learning_rate": trial.suggest_float("value_learning_rate", 1e-4, 1e-2, log=True),
        "n_value_epochs": trial.suggest_int("n_value_epochs", 1, 10),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    trial.set_user_attr("gamma", 1 - sampled["one_minus_gamma"])
    trial.set_user_attr("n_steps", 2 ** sampled["n_steps_pow"])
    return convert_reinforce_params(sampled)


def sample_reference_params(trial: optuna.Trial, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """
    The reference-policy term's search space, when the zoo entry or ``-params`` sets ``ref_policy``: beta and, with a
    controller other than ``"fixed"``, its target (nothing otherwise: the term is off).

    :param trial: the Optuna trial
    :param hyperparams: the zoo entry's hyperparameters
    :return: ``ref_kl_coef`` (and ``ref_kl_target``)
    """
    if hyperparams.get("ref_policy") is None:
        return {}
    sampled = {"ref_kl_coef": trial.suggest_float("ref_kl_coef", 0.001, 1.0, log=True)}
    if hyperparams.get("ref_kl_controller", "fixed") != "fixed":
        sampled["ref_kl_target"] = trial.suggest_float("ref_kl_target", 0.001, 0.1, log=True)
    return sampled


def with_reference(sampler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """:return: the sampler, plus ``sample_reference_params`` on the trial's zoo hyperparameters"""

    @functools.wraps(sampler)
    def sample(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        return {**sampler(trial, n_actions, n_envs, additional_args), **sample_reference_params(trial, ZOO_HYPERPARAMS.get())}

    return sample


# zoo key -> sampler, converter; PPOClip and TRPOKL are SB3 PPO's and sb3-contrib TRPO's maths: rl-zoo3's search
# spaces and converter apply unchanged
SAMPLERS: dict[str, Callable[..., dict[str, Any]]] = {
    "reinforce": with_reference(sample_reinforce_params),
    "ppo_kl": with_reference(sample_ppo_kl_params),
    "ppo_clip": with_reference(sample_ppo_clip_params),
    "trpo_kl": with_reference(sample_trpo_kl_params),
}
CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "reinforce": convert_reinforce_params,
    "ppo_kl": convert_onpolicy_params,
    "ppo_clip": convert_onpolicy_params,
    "trpo_kl": convert_onpolicy_params,
}
