"""Helpers shared by the benchmark scripts: zoo hyperparameters as keyword arguments, software versions."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import yaml
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch import nn

from sb3_ppo_variants.zoo import hyperparams_file

# entries of a zoo file that rl-zoo3 handles itself
ZOO_ONLY_KEYS = ("n_envs", "n_timesteps", "normalize", "policy")


def zoo_entry(algo: str, env_id: str) -> dict[str, Any]:
    """The shipped rl-zoo3 entry of ``algo`` for ``env_id`` (falls back to ``default``)."""
    entries = yaml.safe_load(hyperparams_file(algo).read_text())
    return dict(entries.get(env_id, entries["default"]))


def zoo_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    """
    Constructor keyword arguments from a zoo entry, as rl-zoo3 would build them: ``lin_x`` schedules
    become their initial constant (timing is not affected), ``policy_kwargs`` strings are evaluated.
    """
    kwargs = {key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS}
    for key, value in list(kwargs.items()):
        if isinstance(value, str) and value.startswith("lin_"):
            kwargs[key] = float(value.split("_", 1)[1])
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"nn": nn, "dict": dict})
    return kwargs


def zoo_env(entry: dict[str, Any], env_id: str, seed: int) -> VecEnv:
    """The vectorised env of a zoo entry (``n_envs`` copies, ``VecNormalize`` if ``normalize``)."""
    env = make_vec_env(env_id, n_envs=int(entry.get("n_envs", 1)), seed=seed)
    return VecNormalize(env) if entry.get("normalize") else env


def software_versions() -> dict[str, str]:
    """Versions of the packages that determine the results."""
    versions = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    packages = ("sb3-ppo-variants", "stable-baselines3", "sb3-contrib", "rl-zoo3", "torch", "gymnasium", "mujoco", "numpy")
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
