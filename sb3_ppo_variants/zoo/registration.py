"""Make rl-zoo3 know this package's algorithms, samplers and hyperparameter files.

rl-zoo3 has no plugin mechanism, so each function below patches one of its module-level tables:

- ``rl_zoo3.utils.ALGOS``: zoo key -> algorithm class (read by the ``--algo`` choices of train/enjoy);
- ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``: Optuna search spaces;
- ``rl_zoo3.exp_manager.ExperimentManager``: its default hyperparameter file is
  ``rl_zoo3/hyperparams/<algo>.yml`` inside rl-zoo3's own package; for our keys it becomes
  ``hyperparams/<algo>.yml`` shipped with this package (an explicit ``-conf`` still wins).

The start-up hook (``_sb3_ppo_variants_zoo_hook``) calls each function right after rl-zoo3 executes
the corresponding module; ``register()`` calls all three (it imports rl-zoo3). All are idempotent.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

# zoo key -> (module, class name); the class name is the key in CapWords, acronyms upper-case
ZOO_ALGOS: dict[str, tuple[str, str]] = {
    "reinforce": ("sb3_ppo_variants.reinforce", "REINFORCE"),
    "ppo_kl": ("sb3_ppo_variants.ppo_kl", "PPOKL"),
    "ppo_clip": ("sb3_ppo_variants.ppo_clip", "PPOClip"),
    "trpo_kl": ("sb3_ppo_variants.trpo_kl", "TRPOKL"),
}

_PATCHED = "_sb3_ppo_variants_patched"


def hyperparams_dir() -> Path:
    """
    :return: the folder with ``<zoo key>.yml``: inside the installed package (wheel), or the
        repository's ``hyperparams/`` for an editable install / a source checkout
    """
    package_dir = Path(__file__).resolve().parent.parent
    packaged = package_dir / "hyperparams"
    return packaged if packaged.is_dir() else package_dir.parent / "hyperparams"


def hyperparams_file(algo: str) -> Path:
    """:return: the shipped rl-zoo3 hyperparameter file of one of our zoo keys"""
    if algo not in ZOO_ALGOS:
        raise ValueError(f"algo must be one of {sorted(ZOO_ALGOS)}, got {algo!r}")
    return hyperparams_dir() / f"{algo}.yml"


def register_algos(utils_module: ModuleType) -> None:
    """Add our classes to ``rl_zoo3.utils.ALGOS``."""
    for key, (module_name, class_name) in ZOO_ALGOS.items():
        utils_module.ALGOS.setdefault(key, getattr(importlib.import_module(module_name), class_name))


def register_samplers(hyperparams_opt_module: ModuleType) -> None:
    """Add our Optuna samplers and converters to rl-zoo3's tables."""
    from sb3_ppo_variants.zoo import samplers

    for key in ZOO_ALGOS:
        hyperparams_opt_module.HYPERPARAMS_SAMPLER.setdefault(key, samplers.SAMPLERS[key])
        hyperparams_opt_module.HYPERPARAMS_CONVERTER.setdefault(key, samplers.CONVERTERS[key])


def register_hyperparams_files(exp_manager_module: ModuleType) -> None:
    """
    Point rl-zoo3's default ``hyperparams/<algo>.yml`` at our files for our keys, and apply the tuning fixes of
    ``sb3_ppo_variants.zoo.tuning`` (``--trial-id``, diverging trials pruned with a reason, start-up retries).
    """
    from sb3_ppo_variants.zoo.tuning import patch_experiment_manager

    patch_experiment_manager(exp_manager_module)
    manager_class = exp_manager_module.ExperimentManager
    if getattr(manager_class, _PATCHED, False):
        return
    original_init = manager_class.__init__
    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        if bound.arguments.get("algo") in ZOO_ALGOS and not bound.arguments.get("config"):
            bound.arguments["config"] = str(hyperparams_file(bound.arguments["algo"]))
        original_init(*bound.args, **bound.kwargs)

    manager_class.__init__ = __init__
    setattr(manager_class, _PATCHED, True)


def register() -> None:
    """Register everything with rl-zoo3 (imports rl_zoo3; raises ImportError if it is not installed)."""
    register_algos(importlib.import_module("rl_zoo3.utils"))
    register_samplers(importlib.import_module("rl_zoo3.hyperparams_opt"))
    register_hyperparams_files(importlib.import_module("rl_zoo3.exp_manager"))
