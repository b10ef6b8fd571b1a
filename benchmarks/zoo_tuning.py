"""Tune one entry of our hyperparameter files with rl-zoo3's unchanged ``-optimize`` command (issue 15, item 3).

An entry whose ``full`` zoo-table cell falls short of its peer's published number (``benchmarks.zoo_table``) is tuned
here at a reduced budget, then written into its file and verified at the file's budget with
``python -m benchmarks.zoo_table --profile full --only <algo>:<env>``; only a verified entry gets its ``# Tuned``
mark (``tests/test_zoo.py`` checks the marks against the committed cells).

Each worker is the command a user would run (docs/tuning.md), one process per core sharing one Optuna study::

    python -m rl_zoo3.train --algo ALGO --env ENV --num-threads 1 -optimize --storage <out>/study.log
        --study-name ALGO-ENV --max-total-trials T -n BUDGET --n-evaluations E --eval-episodes K
        --sampler tpe --pruner P --n-startup-trials S --seed SEED+w --no-optim-plots -f <out>/logs

The study is a journal file (``study.log``: Optuna's ``JournalFileBackend``, plain text, committed with the
report), so a stopped tuning resumes: the trials a killed worker left RUNNING are marked FAIL
(``sb3_ppo_variants.zoo.tuning.fail_running_trials``; the folder is this command's own, so no live worker runs
them) and the workers run the trials still missing up to ``--trials``. Worker ``w`` gets seed ``SEED + w`` (its
sampler's and its trials' seed; equal seeds would draw the same start-up trials); which worker takes which trial
depends on timing, so a study with several workers is not reproducible trial for trial.

The report (``results.md``, ``results.json``) lists every trial (state, objective: rl-zoo3's mean return of the
last evaluation, deterministic, ``--eval-episodes`` episodes), the best trial's parameters and the entry it makes:
the file's entry with the trial's keyword arguments on top, as rl-zoo3's objective builds each trial's
(``kwargs.update(sampled)``; a sampled ``policy_kwargs`` replaces the entry's), written as YAML to paste into the file
(``entry.yml``). ``--trial N`` writes that trial's entry instead of the best one.

    python -m benchmarks.zoo_tuning --cell ppo_kl:Swimmer-v5 --trials 30 --budget 300000 --workers 2   # resumes
    python -m benchmarks.zoo_tuning --cell ppo_kl:Swimmer-v5 --report-only
    python -m benchmarks.zoo_table --profile full --only ppo_kl:Swimmer-v5   # after pasting entry.yml: the verification

Results go to ``benchmarks/results/zoo_tuning/<algo>-<env>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, software_versions, zoo_entries, zoo_entry
from sb3_ppo_variants.zoo import ZOO_ALGOS

#: rl-zoo3's ``-optimize`` settings of a tuning (the command line's defaults)
DEFAULTS = {
    "trials": 30,
    "budget": 300_000,
    "evaluations": 5,
    "eval_episodes": 10,
    "startup_trials": 8,
    "seed": 0,
    "pruner": "median",
}


def parse_cell(cell: str) -> tuple[str, str]:
    """:return: (algo, env_id) of ``algo:env``, the algorithm one of our zoo keys"""
    algo, sep, env_id = cell.partition(":")
    if not sep or not env_id:
        raise ValueError(f"--cell must be <algo>:<env>, e.g. ppo_kl:Swimmer-v5; got {cell!r}")
    if algo not in ZOO_ALGOS:
        raise ValueError(f"--cell's algorithm must be one of {sorted(ZOO_ALGOS)}; got {algo!r}")
    entries = sorted(key for key in zoo_entries(algo) if key != "default")
    if env_id not in entries:
        raise ValueError(f"--cell: {algo}.yml has no entry {env_id!r} to tune; its entries: {', '.join(entries)}")
    return algo, env_id


def study_name(algo: str, env_id: str) -> str:
    return f"{algo}-{env_id}"


def worker_command(algo: str, env_id: str, out_dir: Path, settings: dict[str, Any], worker: int = 0) -> list[str]:
    """:return: worker ``worker``'s command: rl-zoo3's ``-optimize`` on the study of ``out_dir``"""
    return [
        *("python", "-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "--num-threads", "1", "-optimize"),
        *("--storage", str(out_dir / "study.log"), "--study-name", study_name(algo, env_id)),
        *("--max-total-trials", str(settings["trials"]), "-n", str(settings["budget"])),
        *("--n-evaluations", str(settings["evaluations"]), "--eval-episodes", str(settings["eval_episodes"])),
        *("--sampler", "tpe", "--pruner", settings["pruner"], "--n-startup-trials", str(settings["startup_trials"])),
        *("--seed", str(settings["seed"] + worker), "--no-optim-plots", "-f", str(out_dir / "logs")),
    ]


def run_workers(algo: str, env_id: str, out_dir: Path, settings: dict[str, Any], workers: int) -> list[int]:
    """
    Run ``workers`` copies of the zoo command on the study (after failing the trials a killed run left RUNNING).

    :return: the workers' exit codes
    """
    from sb3_ppo_variants.zoo.tuning import fail_running_trials

    out_dir.mkdir(parents=True, exist_ok=True)
    storage = out_dir / "study.log"
    if storage.exists():
        try:
            failed = fail_running_trials(str(storage), study_name(algo, env_id))
        except KeyError:
            failed = []
        if failed:
            print(f"trials left RUNNING by a stopped run marked FAIL: {failed}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (out_dir / "logs").mkdir(exist_ok=True)
    logs = [open(out_dir / "logs" / f"worker{w}.txt", "a") for w in range(workers)]
    procs = []
    for w in range(workers):
        command = worker_command(algo, env_id, out_dir, settings, w)
        command[0] = sys.executable
        procs.append(subprocess.Popen(command, env=env, stdout=logs[w], stderr=subprocess.STDOUT))
    codes = [proc.wait() for proc in procs]
    for log in logs:
        log.close()
    return codes


def yaml_value(value: Any) -> str:
    """:return: ``value`` as rl-zoo3's files write it (``policy_kwargs`` as a ``dict(...)`` string, classes as ``nn.X``)"""
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={python_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):  # exact (shortest round-trip repr); PyYAML reads 1e-05 as a string without the tag
        return repr(value) if "e" not in repr(value) else f"!!float {value!r}"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def python_value(value: Any) -> str:
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={python_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, type):
        return f"nn.{value.__name__}"
    return repr(value)


def trial_entry(algo: str, env_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """:return: the entry a trial ran: the file's entry with the trial's converted keyword arguments on top"""
    from sb3_ppo_variants.zoo.samplers import CONVERTERS

    sampled = CONVERTERS[algo](dict(params))
    return {**zoo_entry(algo, env_id), **sampled}


def entry_yaml(env_id: str, entry: dict[str, Any]) -> str:
    lines = [f"{env_id}:"]
    for key, value in entry.items():
        text = f'"{yaml_value(value)}"' if key == "policy_kwargs" and isinstance(value, dict) else yaml_value(value)
        lines.append(f"  {key}: {text}")
    return "\n".join(lines) + "\n"


def summarise(algo: str, env_id: str, out_dir: Path, settings: dict[str, Any], trial: int | None = None) -> dict[str, Any]:
    """:return: the content of ``results.json``: every trial, the chosen (best) trial and its entry"""
    import optuna
    from optuna.trial import TrialState

    from sb3_ppo_variants.zoo.tuning import load_storage

    study = optuna.load_study(study_name=study_name(algo, env_id), storage=load_storage(str(out_dir / "study.log")))
    trials: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        start, end = t.datetime_start, t.datetime_complete
        seconds = (end - start).total_seconds() if start is not None and end is not None else None
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": None if t.value is None or not math.isfinite(t.value) else float(t.value),
                "last_step": t.last_step,
                "params": t.params,
                "seconds": seconds,
                "stop_reason": t.user_attrs.get("stop_reason"),
            }
        )
    complete = [t for t in trials if t["state"] == TrialState.COMPLETE.name and t["value"] is not None]
    chosen = None
    if trial is not None:
        chosen = next((t for t in trials if t["number"] == trial), None)
        if chosen is None:
            raise ValueError(f"--trial {trial}: no such trial in the study (0 to {len(trials) - 1})")
    elif complete:
        chosen = max(complete, key=lambda t: t["value"])
    entry = trial_entry(algo, env_id, chosen["params"]) if chosen else None
    return {
        "algo": algo,
        "env_id": env_id,
        "settings": settings,
        "command": " ".join(worker_command(algo, env_id, Path("<out>"), settings)),
        "trials": trials,
        "counts": {state: sum(t["state"] == state for t in trials) for state in sorted({t["state"] for t in trials})},
        "chosen": chosen,
        "entry": None if entry is None else json.loads(json.dumps(entry, default=python_value)),
        "entry_yaml": None if entry is None else entry_yaml(env_id, entry),
        "software": software_versions(["optuna"]),
    }


def markdown(result: dict[str, Any], out_dir: Path) -> str:
    algo, env_id, settings = result["algo"], result["env_id"], result["settings"]
    rel = out_dir.relative_to(RESULTS.parent.parent) if out_dir.is_relative_to(RESULTS.parent.parent) else out_dir
    lines = [
        f"Tuning of {algo}'s {env_id} entry: `python -m benchmarks.zoo_tuning --cell {algo}:{env_id} --trials "
        f"{settings['trials']} --budget {settings['budget']}`  ",
        f"Each worker: `{result['command'].replace('<out>', str(rel))}` (worker w: seed {settings['seed']} + w).  ",
        f"Objective: rl-zoo3's mean return of the last of {settings['evaluations']} evaluations "
        f"({settings['eval_episodes']} deterministic episodes) at {settings['budget']:,} steps; "
        f"pruner: {settings['pruner']}.  ",
        "Trials: " + ", ".join(f"{n} {state}" for state, n in result["counts"].items()) + ".",
        "",
    ]
    ranked = sorted(
        (t for t in result["trials"] if t["value"] is not None), key=lambda t: (t["state"] != "COMPLETE", -t["value"])
    )
    lines += ["| trial | state | objective | steps | minutes | parameters |", "|---|---|---|---|---|---|"]
    for t in ranked:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        minutes = "" if t["seconds"] is None else f"{t['seconds'] / 60:.1f}"
        lines.append(f"| {t['number']} | {t['state']} | {t['value']:.1f} | {t['last_step'] or ''} | {minutes} | {params} |")
    others = [t for t in result["trials"] if t["value"] is None]
    if others:
        lines += ["", "Without an objective: " + ", ".join(f"trial {t['number']} {t['state']}" for t in others) + "."]
    if result["chosen"] is not None:
        lines += [
            "",
            f"Entry of trial {result['chosen']['number']} (objective {result['chosen']['value']:.1f}): the file's entry with "
            "the trial's keyword arguments on top, as rl-zoo3's objective builds it (`entry.yml`):",
            "",
            "```yaml",
            result["entry_yaml"].rstrip(),
            "```",
            "",
            "Verified only at the file's budget, 2 seeds: "
            f"`python -m benchmarks.zoo_table --profile full --only {algo}:{env_id}`.",
        ]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "results.md").write_text(markdown(result, out_dir))
    if result["entry_yaml"] is not None:
        (out_dir / "entry.yml").write_text(result["entry_yaml"])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo_tuning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", required=True, help="<algo>:<env>, the entry to tune (one of our zoo keys)")
    parser.add_argument("--trials", type=int, default=DEFAULTS["trials"], help="the study's trials in total (resumes)")
    parser.add_argument("--budget", type=int, default=DEFAULTS["budget"], help="environment steps per trial")
    parser.add_argument("--evaluations", type=int, default=DEFAULTS["evaluations"], help="evaluations per trial")
    parser.add_argument("--eval-episodes", type=int, default=DEFAULTS["eval_episodes"])
    parser.add_argument("--startup-trials", type=int, default=DEFAULTS["startup_trials"], help="random trials first")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--pruner", choices=["median", "halving", "none"], default=DEFAULTS["pruner"], help="rl-zoo3's")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    parser.add_argument("--trial", type=int, default=None, help="report this trial's entry instead of the best one")
    parser.add_argument("--report-only", action="store_true", help="the report from the stored study")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        algo, env_id = parse_cell(args.cell)
    except ValueError as error:
        parser.error(str(error))
    for name in ("trials", "budget", "evaluations", "eval_episodes", "startup_trials", "workers"):  # all counts
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    settings = {key: getattr(args, key) for key in DEFAULTS}
    out_dir = args.output or RESULTS / "zoo_tuning" / study_name(algo, env_id)
    stored = out_dir / "results.json"
    if args.report_only:
        if not (out_dir / "study.log").exists():
            parser.error(f"--report-only: no study in {out_dir}")
        if stored.exists():
            settings = json.loads(stored.read_text())["settings"]
    else:
        codes = run_workers(algo, env_id, out_dir, settings, args.workers)
        if any(code != 0 for code in codes):
            print(f"worker exit codes {codes}; their output: {out_dir / 'logs'}", file=sys.stderr)
    result = summarise(algo, env_id, out_dir, settings, args.trial)
    write_report(result, out_dir)
    values = [t["value"] for t in result["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
    best = f"best {max(values):.1f} (median {np.median(values):.1f})" if values else "no complete trial"
    print(f"{len(result['trials'])} trials, {best}; results: {out_dir}")
    return out_dir


if __name__ == "__main__":
    main()
