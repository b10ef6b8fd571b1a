"""What every benchmark script shares: the command line, zoo entries as constructor arguments, software versions.

The command line of every experiment (``python -m benchmarks.<experiment> ...``), built by :func:`experiment_parser`:

- ``--profile NAME``: the budget (each script lists its profiles; the default one produced the committed results);
- ``--smoke``: the tiny CI budget (overrides ``--profile``); its results go to a new temporary folder unless ``--output``;
- ``--report-only``: run nothing; regenerate the report from the stored results (see ``runner.report``);
- ``--output DIR``: the folder of the results (default: ``benchmarks/results/<experiment>/<profile>``, or where the
  experiment's committed results are).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import tempfile
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from sb3_ppo_variants.zoo import ZOO_ALGOS, hyperparams_file

RESULTS = Path(__file__).parent / "results"
SMOKE = "smoke"  # the profile of ``--smoke``
# entries of a zoo file that rl-zoo3 handles itself instead of passing them to the algorithm's constructor
ZOO_ONLY_KEYS = ("n_envs", "n_timesteps", "normalize", "policy")


def experiment_parser(doc: str | None, profiles: Iterable[str], default: str) -> argparse.ArgumentParser:
    """
    The command line every experiment script shares (``--profile``, ``--smoke``, ``--report-only``, ``--output``);
    a script adds its own options to it.

    :param doc: the script's docstring (the ``--help`` text)
    :param profiles: the script's profile names (``smoke`` is selected by ``--smoke``)
    :param default: the profile without ``--profile``: the one of the committed results
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = [name for name in profiles if name != SMOKE]
    parser.add_argument("--profile", choices=choices, default=default, help="budget (default: %(default)s, the committed one)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CI budget (overrides --profile), to a new temporary folder unless --output"
    )
    parser.add_argument("--report-only", action="store_true", help="run nothing: regenerate the report from stored results")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default: see the module docstring)")
    return parser


def profile_and_output(
    args: argparse.Namespace, experiment: str, folders: Mapping[str, Path] | None = None
) -> tuple[str, Path]:
    """
    :param args: parsed by a parser of :func:`experiment_parser`
    :param experiment: the experiment's name
    :param folders: profile -> its folder, where it is not ``benchmarks/results/<experiment>/<profile>``
    :return: the profile's name and the folder of its results
    """
    profile = SMOKE if args.smoke else args.profile
    if args.output is not None:
        return profile, args.output
    if args.smoke:
        return profile, Path(tempfile.mkdtemp(prefix=f"{experiment}_{SMOKE}_"))
    return profile, (folders or {}).get(profile, RESULTS / experiment / profile)


def command_line(experiment: str, argv: list[str]) -> str:
    """:return: the command that runs ``experiment`` with the arguments ``argv``, as the README writes it"""
    return shlex.join(["python", "-m", f"benchmarks.{experiment}", *argv])


def zoo_entries(algo: str) -> dict[str, Any]:
    """
    :param algo: one of our zoo keys (this package's file) or an rl-zoo3 key such as ``ppo`` (rl-zoo3's own file)
    :return: the whole hyperparameter file of ``algo``: entry id (``default`` included) -> entry
    """
    if algo in ZOO_ALGOS:
        return yaml.safe_load(hyperparams_file(algo).read_text())
    import rl_zoo3

    return yaml.load((Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml").read_text(), Loader=yaml.UnsafeLoader)


#: (zoo key, entry id) of the PPO paper's MuJoCo settings (Schulman et al. 2017, Table 3): the entry ppo_kl.yml gives
#: its MuJoCo tasks but HalfCheetah-v5 (the anchor ``ppo-paper-mujoco``), for the measurements that run every PPO with
#: those settings on HalfCheetah-v5 (with PPOKL's own arguments left out for the others)
PAPER_ENTRY = ("ppo_kl", "Hopper-v5")


def zoo_entry(algo: str, env_id: str, entry_id: str | None = None) -> dict[str, Any]:
    """
    The zoo entry that ``rl_zoo3.train`` would use.

    :param algo: one of our zoo keys (the entry comes from this package's files, ``default`` when the environment has no
        entry of its own) or an rl-zoo3 key such as ``ppo`` (from rl-zoo3's own files, which must have the entry)
    :param env_id: the environment
    :param entry_id: read this id's entry instead (e.g. a v4 entry for a v5 task)
    :return: a copy of the entry
    """
    key = entry_id or env_id
    entries = zoo_entries(algo)
    if algo in ZOO_ALGOS:
        return dict(entries.get(key, entries["default"]))
    if key not in entries:
        raise KeyError(f"rl-zoo3's {algo}.yml has no entry {key}")
    return dict(entries[key])


def zoo_kwargs(entry: dict[str, Any], constant_schedules: bool = False) -> dict[str, Any]:
    """
    Constructor keyword arguments from a zoo entry, as ``rl_zoo3.train`` builds them: the keys rl-zoo3 handles itself
    (``ZOO_ONLY_KEYS``) are left out, ``lin_<x>`` strings become rl-zoo3's linear schedule from x to 0, a
    ``policy_kwargs`` string is evaluated (with ``nn`` in scope).

    :param entry: a zoo entry, or keyword arguments written in its conventions
    :param constant_schedules: ``lin_<x>`` becomes the constant x instead (for measurements that run single updates
        outside a training's progress, where a schedule would be near its end)
    :return: the keyword arguments
    """
    from rl_zoo3.utils import SimpleLinearSchedule
    from torch import nn

    kwargs = {key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS}
    for key, value in kwargs.items():
        if isinstance(value, str) and value.startswith("lin_"):
            start = float(value.split("_", 1)[1])
            kwargs[key] = start if constant_schedules else SimpleLinearSchedule(start)
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"nn": nn, "dict": dict})
    return kwargs


def software_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """:return: the versions of the packages that determine the results (and of the ``extra`` ones)"""
    versions = {"python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor()}
    packages = ("sb3-ppo-variants", "stable-baselines3", "sb3-contrib", "rl-zoo3", "torch", "gymnasium", "mujoco", "numpy")
    for package in (*packages, *extra):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
