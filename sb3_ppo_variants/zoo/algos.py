"""The zoo keys of this package's algorithms: the one table that every other list of them is derived from.

Imports only the standard library (the classes are imported by :func:`algorithm_class`, on demand), so that the
registration, the tuning helpers and the benchmarks can all read it without importing one another.
"""

from __future__ import annotations

import importlib

# zoo key -> (module, class name); the class name is the key in CapWords, acronyms upper-case
ZOO_ALGOS: dict[str, tuple[str, str]] = {
    "reinforce": ("sb3_ppo_variants.reinforce", "REINFORCE"),
    "ppo_kl": ("sb3_ppo_variants.ppo_kl", "PPOKL"),
    "ppo_clip": ("sb3_ppo_variants.ppo_clip", "PPOClip"),
    "trpo_kl": ("sb3_ppo_variants.trpo_kl", "TRPOKL"),
}


def algorithm_class(key: str) -> type:
    """
    :param key: one of our zoo keys (``ZOO_ALGOS``)
    :return: the algorithm class of that key (imports its module)
    """
    if key not in ZOO_ALGOS:
        raise ValueError(f"algo must be one of {sorted(ZOO_ALGOS)}, got {key!r}")
    module_name, class_name = ZOO_ALGOS[key]
    return getattr(importlib.import_module(module_name), class_name)
