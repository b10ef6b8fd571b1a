"""Start-up hook that registers sb3_ppo_variants with rl-zoo3, lazily.

Installed next to a ``.pth`` file, this module is imported at every interpreter start-up, so it
must stay cheap: it imports only the standard library and adds one finder to ``sys.meta_path``.
Nothing else happens until (and unless) ``rl_zoo3`` itself is imported; then, right after each of
the three rl-zoo3 modules below has executed, the matching function of
``sb3_ppo_variants.zoo.registration`` adds our algorithms, samplers and hyperparameter files.

rl-zoo3 has no plugin mechanism and builds its ``--algo`` choices from ``rl_zoo3.utils.ALGOS``
when ``rl_zoo3.train`` parses its arguments, which is why registration has to happen at import time.

Switch it off with ``SB3_PPO_VARIANTS_ZOO_HOOK=0``; ``sb3_ppo_variants.zoo.register()`` and
``python -m sb3_ppo_variants.zoo train ...`` are the explicit, hook-free routes.
"""

import os
import sys
from importlib.machinery import PathFinder  # already loaded at start-up (importlib.abc is not: ~30 ms)

ENV_VAR = "SB3_PPO_VARIANTS_ZOO_HOOK"

# rl-zoo3 module -> function of sb3_ppo_variants.zoo.registration to call once it is executed
_TARGETS = {
    "rl_zoo3.utils": "register_algos",
    "rl_zoo3.hyperparams_opt": "register_samplers",
    "rl_zoo3.exp_manager": "register_hyperparams_files",
}


def is_enabled() -> bool:
    """The hook is on unless ``SB3_PPO_VARIANTS_ZOO_HOOK`` is one of 0, false, no, off."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


class _RegisteringLoader:
    """Delegates to rl-zoo3's own loader, then calls our registration function on the module."""

    def __init__(self, wrapped, function_name: str) -> None:  # type: ignore[no-untyped-def]
        self._wrapped = wrapped
        self._function_name = function_name

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._wrapped.create_module(spec)

    def exec_module(self, module) -> None:  # type: ignore[no-untyped-def]
        self._wrapped.exec_module(module)  # type: ignore[attr-defined]
        from sb3_ppo_variants.zoo import registration

        getattr(registration, self._function_name)(module)


class ZooRegistrationFinder:
    """Finds the three rl-zoo3 modules like the normal path finder and wraps their loader."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        function_name = _TARGETS.get(fullname)
        if function_name is None:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _RegisteringLoader(spec.loader, function_name)
        return spec


def install() -> None:
    """Add the finder once (idempotent)."""
    if not any(isinstance(finder, ZooRegistrationFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, ZooRegistrationFinder())


if is_enabled():
    install()
