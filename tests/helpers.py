"""Shared helpers of the test suite."""

import inspect
from typing import Any

import torch as th
from stable_baselines3.common.logger import Logger


def policy_params(model) -> th.Tensor:
    """All policy parameters of a model, concatenated (for exact comparisons)."""
    return th.cat([p.detach().reshape(-1).clone() for p in model.policy.parameters()])


def silent_logger() -> Logger:
    """An SB3 logger that writes nowhere; ``name_to_value`` keeps what was recorded since the last dump."""
    return Logger(folder=None, output_formats=[])


def learn_and_read_logs(model, total_timesteps: int) -> dict[str, float]:
    """
    Train and return the ``train/`` values recorded by the last ``train()`` call.
    (SB3 dumps the logs before ``train()``, so the last update's values are still pending after ``learn``.)
    """
    model.set_logger(silent_logger())
    model.learn(total_timesteps)
    return {k: v for k, v in model.logger.name_to_value.items() if k.startswith("train/")}


def assert_signature_superset(ours: type, peer: type, different_defaults: dict | None = None) -> None:
    """
    Every constructor parameter of ``peer`` exists in ``ours`` with the same default, in the same relative order;
    ``different_defaults`` (name -> our default) lists the deliberate exceptions, which must hold exactly.
    """
    different_defaults = different_defaults or {}
    our_parameters = inspect.signature(ours).parameters
    peer_parameters = inspect.signature(peer).parameters
    for name, parameter in peer_parameters.items():
        assert name in our_parameters, f"missing parameter {name}"
        expected = different_defaults.get(name, parameter.default)
        assert our_parameters[name].default == expected, f"default of {name} differs"
        if name in different_defaults:
            assert different_defaults[name] != parameter.default, f"{name}: not a difference"
    assert [name for name in our_parameters if name in peer_parameters] == list(peer_parameters)


def run_main(module: Any, *args: str) -> None:
    """The command line of an experiment script (``python -m benchmarks.<module> ...``), in this process."""
    from benchmarks import runner

    if hasattr(module, "main"):  # a script with a main of its own (the paired measurements, fine_tuning)
        module.main(list(args))
    else:  # an experiment of the runner
        runner.main(module.EXPERIMENT, list(args))
