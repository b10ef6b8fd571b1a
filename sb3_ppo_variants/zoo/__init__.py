"""rl-zoo3 integration: algorithm registration, Optuna samplers, hyperparameter files, launcher.

``register()`` is the explicit, hook-free route::

    import sb3_ppo_variants.zoo
    sb3_ppo_variants.zoo.register()   # then use rl_zoo3 as usual

Importing this package does not import rl_zoo3; ``register()`` does.
"""

from sb3_ppo_variants.zoo.algos import ZOO_ALGOS, algorithm_class
from sb3_ppo_variants.zoo.registration import hyperparams_dir, hyperparams_file, register

__all__ = ["ZOO_ALGOS", "algorithm_class", "hyperparams_dir", "hyperparams_file", "register"]
