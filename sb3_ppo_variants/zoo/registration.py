"""Make rl-zoo3 know this package's algorithms, samplers and hyperparameter files.

rl-zoo3 has no plugin mechanism, so each function below patches one of its module-level tables:

- ``rl_zoo3.utils.ALGOS``: zoo key -> algorithm class (read by the ``--algo`` choices of train/enjoy);
- ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``: Optuna search spaces;
- ``rl_zoo3.exp_manager.ExperimentManager``: its default hyperparameter file is
  ``rl_zoo3/hyperparams/<algo>.yml`` inside rl-zoo3's own package; for our keys it becomes
  ``sb3_ppo_variants/zoo/hyperparams/<algo>.yml`` shipped inside this package (an explicit ``-conf`` still wins).

The start-up hook (``_sb3_ppo_variants_zoo_hook``) calls each function right after rl-zoo3 executes
the corresponding module; ``register()`` calls all three (it imports rl-zoo3). All are idempotent.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from importlib.resources import files
from pathlib import Path
from types import ModuleType
from typing import Any

from sb3_ppo_variants.zoo.algos import ZOO_ALGOS, algorithm_class

_PATCHED = "_sb3_ppo_variants_patched"


def hyperparams_dir() -> Path:
    """
    :return: the folder with ``<zoo key>.yml``, ``sb3_ppo_variants/zoo/hyperparams`` inside the installed package
        (found with ``importlib.resources``: the same place in a wheel, an editable install and a source checkout)
    """
    folder = files("sb3_ppo_variants.zoo") / "hyperparams"
    # rl-zoo3 opens its hyperparameter file by path: the package must be installed as files (as pip does), not zipped
    if not isinstance(folder, Path):
        raise RuntimeError(f"rl-zoo3 needs the hyperparameter files on disk, found {folder!r}")
    return folder


def hyperparams_file(algo: str) -> Path:
    """
    :param algo: one of our zoo keys (``ZOO_ALGOS``)
    :return: the shipped rl-zoo3 hyperparameter file of that key
    """
    if algo not in ZOO_ALGOS:
        raise ValueError(f"algo must be one of {sorted(ZOO_ALGOS)}, got {algo!r}")
    return hyperparams_dir() / f"{algo}.yml"


def register_algos(utils_module: ModuleType) -> None:
    """Add our classes to ``rl_zoo3.utils.ALGOS``."""
    for key in ZOO_ALGOS:
        utils_module.ALGOS.setdefault(key, algorithm_class(key))


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
    from sb3_ppo_variants.zoo.tuning import patch_experiment_manager  # imports optuna (the zoo extra), as rl-zoo3 does

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
