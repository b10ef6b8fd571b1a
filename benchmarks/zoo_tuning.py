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
(``sb3_ppo_variants.zoo.tuning.fail_running_trials``; ``workers.pid`` refuses a second run while one is alive) and
the workers run the trials still missing up to ``--trials``. ``tuning.json``, written when the study starts, keeps
its settings and the file's entry as the trials ran it: a resume with other settings (but ``--trials``) or after the
entry was edited is refused, and the report builds its entries from the stored one. Worker ``w`` of a run that finds
``n`` trials gets seed ``SEED + n + w`` (its sampler's and its trials' seed: equal seeds would draw the same start-up
trials again); which worker takes which trial depends on timing, so a study with several workers is not
reproducible trial for trial.

The report (``results.md``, ``results.json``) lists every trial (state, objective: rl-zoo3's mean return of the
last evaluation, deterministic, ``--eval-episodes`` episodes), the best trial's parameters and the entry it makes:
the stored entry with the trial's keyword arguments on top, as rl-zoo3's objective builds each trial's
(``kwargs.update(sampled)``; a sampled ``policy_kwargs`` replaces the entry's), written as YAML to paste into the file
(``entry.yml``). ``--trial N`` writes that trial's entry instead of the best one. One difference no entry can
express, rl-zoo3's own: with ``normalize``, a trial's VecNormalize discounts with the file's ``gamma`` (set once when
``-optimize`` starts), an entry's (and ``--trial-id``'s) with the entry's; the report says when the trial sampled
another ``gamma``. The verification at the file's budget runs the entry as written.

``--enqueue NAME=VALUE,...`` (repeatable) puts a trial with those parameters (the sampler's names, as the report
lists them; the others are sampled) at the head of the study (Optuna's ``enqueue_trial``): a tuning can start from a
known entry or a candidate of its own instead of from random start-up trials. Each is checked against the cell's
sampler before anything runs (a name it does not sample, a value outside its range: an error naming the allowed
ones); one with the parameters of a trial already in the study is not added again, so the command resumes as it is.

    python -m benchmarks.zoo_tuning --cell ppo_kl:Swimmer-v5 --trials 30 --budget 300000 --workers 2   # resumes
    python -m benchmarks.zoo_tuning --cell ppo_kl:Swimmer-v5 --enqueue kl_target=0.005,n_epochs=10   # a first trial
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


def worker_command(algo: str, env_id: str, out_dir: Path, settings: dict[str, Any], seed: int | None = None) -> list[str]:
    """:return: a worker's command: rl-zoo3's ``-optimize`` on the study of ``out_dir`` (``seed``: the worker's)"""
    return [
        *("python", "-m", "rl_zoo3.train", "--algo", algo, "--env", env_id, "--num-threads", "1", "-optimize"),
        *("--storage", str(out_dir / "study.log"), "--study-name", study_name(algo, env_id)),
        *("--max-total-trials", str(settings["trials"]), "-n", str(settings["budget"])),
        *("--n-evaluations", str(settings["evaluations"]), "--eval-episodes", str(settings["eval_episodes"])),
        *("--sampler", "tpe", "--pruner", settings["pruner"], "--n-startup-trials", str(settings["startup_trials"])),
        *("--seed", str(settings["seed"] if seed is None else seed), "--no-optim-plots", "-f", str(out_dir / "logs")),
    ]


def load_study(algo: str, env_id: str, out_dir: Path) -> Any:
    """:return: the study of ``out_dir`` (``FileNotFoundError`` / ``KeyError`` naming what is missing)"""
    import optuna

    from sb3_ppo_variants.zoo.tuning import load_storage

    if not (out_dir / "study.log").exists():
        raise FileNotFoundError(f"no study in {out_dir} (study.log)")
    try:
        return optuna.load_study(study_name=study_name(algo, env_id), storage=load_storage(str(out_dir / "study.log")))
    except KeyError:
        raise KeyError(f"{out_dir / 'study.log'} holds no study named {study_name(algo, env_id)!r}") from None


def parse_params(text: str) -> dict[str, Any]:
    """:return: the parameters of ``NAME=VALUE,NAME=VALUE`` (``--enqueue``), each value read as YAML (numbers, true,
    strings)"""
    import yaml

    params: dict[str, Any] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"--enqueue takes NAME=VALUE,NAME=VALUE (the sampler's names); got {text!r}")
        if name in params:
            raise ValueError(f"--enqueue {text!r} gives {name} twice")
        params[name] = yaml.safe_load(value)
    return params


def check_enqueued(algo: str, env_id: str, trials: list[dict[str, Any]]) -> None:
    """
    Check each of ``trials`` against the cell's sampler: each value within the range or among the choices the sampler
    gives its name, and each name one the sampler samples for this cell given the other values (PPOKL's ``kl_rule``
    only with the adaptive controller; ``learn_std`` only for continuous actions), by running the sampler as a worker
    would on a trial enqueued with them (an in-memory study).

    :raise ValueError: naming the parameter and the allowed names or values
    """
    import gymnasium as gym

    entry = zoo_entry(algo, env_id)
    env = gym.make(env_id)
    space = env.action_space
    env.close()
    n_actions = space.shape[0] if isinstance(space, gym.spaces.Box) else 0  # rl-zoo3's convention
    distributions = _sampled(algo, entry, n_actions, {}).distributions  # one draw: the ranges and choices
    for params in trials:
        for name, value in params.items():
            if name in distributions and not _contains(distributions[name], value):
                raise ValueError(
                    f"--enqueue: {name}={value!r} is outside the {algo} sampler's {describe(distributions[name])}"
                )
        trial = _sampled(algo, entry, n_actions, params)  # the conditional parameters, with the values given
        unknown = sorted(set(params) - set(trial.params))
        if unknown:
            ranges = "; ".join(f"{name}: {describe(dist)}" for name, dist in trial.distributions.items())
            raise ValueError(
                f"--enqueue: {', '.join(unknown)} not sampled by the {algo} sampler for {env_id} with these values; "
                f"it samples {ranges}"
            )


def _sampled(algo: str, entry: dict[str, Any], n_actions: int, params: dict[str, Any]) -> Any:
    """:return: a trial of an in-memory study, enqueued with ``params``, after ``algo``'s sampler ran on it as in a
    worker (``entry`` in ``ZOO_HYPERPARAMS``, rl-zoo3's ``n_actions``); a fixed value out of range raises"""
    import warnings

    import optuna

    from benchmarks.common import zoo_kwargs
    from sb3_ppo_variants.zoo.samplers import SAMPLERS, ZOO_HYPERPARAMS

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" per check
    try:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    if params:
        study.enqueue_trial(params)
    trial = study.ask()
    token = ZOO_HYPERPARAMS.set(zoo_kwargs(entry))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna only warns of a fixed float outside its range
            SAMPLERS[algo](trial, n_actions, int(entry.get("n_envs", 1)), {})
    except (ValueError, UserWarning) as error:
        raise ValueError(f"--enqueue: {error}") from None
    finally:
        ZOO_HYPERPARAMS.reset(token)
    return trial


def _contains(distribution: Any, value: Any) -> bool:
    """:return: whether an Optuna distribution holds ``value`` (a categorical's choices, a float's or int's range)"""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def describe(distribution: Any) -> str:
    """:return: an Optuna distribution's allowed values, e.g. ``[1, 5, 10, 20]`` or ``0.001 to 0.1 (log)``"""
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return "[" + ", ".join(map(str, distribution.choices)) + "]"
    log = " (log)" if getattr(distribution, "log", False) else ""
    return f"{distribution.low} to {distribution.high}{log}"


def enqueue(algo: str, env_id: str, out_dir: Path, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Enqueue ``trials`` (checked by :func:`check_enqueued` first) on the study of ``out_dir``, creating it as rl-zoo3
    does (``maximize``) if it does not exist yet; a trial whose parameters one of the study's has is not added again.

    :return: the trials enqueued now
    """
    import optuna

    from sb3_ppo_variants.zoo.tuning import load_storage

    check_enqueued(algo, env_id, trials)
    study = optuna.create_study(
        study_name=study_name(algo, env_id),
        storage=load_storage(str(out_dir / "study.log")),
        direction="maximize",
        load_if_exists=True,
    )
    added = []
    for params in trials:
        before = len(study.get_trials(deepcopy=False))
        study.enqueue_trial(params, skip_if_exists=True)
        if len(study.get_trials(deepcopy=False)) > before:
            added.append(params)
    return added


def start(algo: str, env_id: str, out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """
    Check that the run may start or resume the study of ``out_dir``: no live run (``workers.pid``), the same settings
    but ``trials``, the file's entry unchanged since the study started (``tuning.json``, written here the first time).

    :return: the content of ``tuning.json``
    """
    pid_file = out_dir / "workers.pid"
    if pid_file.exists():
        alive = [pid for pid in map(int, pid_file.read_text().split()) if _alive(pid)]
        if alive:
            raise RuntimeError(f"a tuning of {out_dir} is running (pids {alive}, {pid_file}); stop it first")
    entry = zoo_entry(algo, env_id)
    stored = out_dir / "tuning.json"
    if stored.exists():
        tuning = json.loads(stored.read_text())
        changed = [key for key in DEFAULTS if key != "trials" and tuning["settings"][key] != settings[key]]
        if changed:
            raise ValueError(
                "the study was started with "
                + ", ".join(f"--{key.replace('_', '-')} {tuning['settings'][key]}" for key in changed)
                + f": resume it with those (or tune into another --output); got {', '.join(str(settings[k]) for k in changed)}"
            )
        if tuning["entry"] != json.loads(json.dumps(entry)):
            raise ValueError(
                f"{algo}.yml's {env_id} entry changed since the study started (stored in {stored}): the trials ran the "
                "stored one; restore it to resume, or tune the new entry into another --output"
            )
        tuning["settings"]["trials"] = settings["trials"]
    else:
        tuning = {"algo": algo, "env_id": env_id, "settings": settings, "entry": entry, "launches": []}
    return tuning


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def run_workers(
    algo: str, env_id: str, out_dir: Path, settings: dict[str, Any], workers: int, enqueued: list[dict[str, Any]] | None = None
) -> list[int]:
    """
    Run ``workers`` copies of the zoo command on the study (after failing the trials a stopped run left RUNNING and
    enqueuing ``enqueued``, :func:`enqueue`).

    :return: the workers' exit codes
    """
    from sb3_ppo_variants.zoo.tuning import fail_running_trials

    out_dir.mkdir(parents=True, exist_ok=True)
    tuning = start(algo, env_id, out_dir, settings)
    added = []
    if enqueued:
        added = enqueue(algo, env_id, out_dir, enqueued)
        print(f"enqueued {len(added)} trial(s); already in the study: {len(enqueued) - len(added)}")
    existing = 0
    if (out_dir / "study.log").exists():
        try:
            failed = fail_running_trials(str(out_dir / "study.log"), study_name(algo, env_id))
            existing = len(load_study(algo, env_id, out_dir).trials)
        except KeyError:
            failed = []
        if failed:
            print(f"trials left RUNNING by a stopped run marked FAIL: {failed}")
    seeds = [settings["seed"] + existing + w for w in range(workers)]
    tuning["launches"].append({"trials_before": existing, "seeds": seeds, **({"enqueued": added} if enqueued else {})})
    (out_dir / "tuning.json").write_text(json.dumps(tuning, indent=1) + "\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (out_dir / "logs").mkdir(exist_ok=True)
    logs = [open(out_dir / "logs" / f"worker{w}.txt", "a") for w in range(workers)]
    procs: list[subprocess.Popen] = []
    try:
        for w, seed in enumerate(seeds):
            command = worker_command(algo, env_id, out_dir, settings, seed)
            command[0] = sys.executable
            procs.append(subprocess.Popen(command, env=env, stdout=logs[w], stderr=subprocess.STDOUT))
        (out_dir / "workers.pid").write_text(" ".join(str(p) for p in [os.getpid(), *(proc.pid for proc in procs)]))
        return [proc.wait() for proc in procs]
    finally:
        for proc in procs:  # interrupted: no orphan workers left on the study
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        for log in logs:
            log.close()
        (out_dir / "workers.pid").unlink(missing_ok=True)


def yaml_value(value: Any) -> str:
    """:return: ``value`` as rl-zoo3's files write it (a dict as a quoted ``dict(...)`` string rl-zoo3 evaluates,
    classes as ``nn.X``, floats exactly)"""
    if isinstance(value, dict):
        return json.dumps(python_value(value))
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
        # exact (shortest round-trip repr); PyYAML reads 1e-05 as a string without the tag
        return repr(value) if "e" not in repr(value) else f"!!float {value!r}"
    if isinstance(value, (str, list, tuple)):
        return json.dumps(value)  # JSON is YAML: quoted and escaped; None in a list -> null
    return str(value)


def python_value(value: Any) -> str:
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={python_value(v)}" for k, v in value.items()) + ")"
    if isinstance(value, type):
        return f"nn.{value.__name__}"
    return repr(value)


def trial_entry(algo: str, entry: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """:return: the entry a trial ran: ``entry`` (the file's, as the study started) with the trial's converted keyword
    arguments on top"""
    from sb3_ppo_variants.zoo.samplers import CONVERTERS

    return {**entry, **CONVERTERS[algo](dict(params))}


def entry_yaml(env_id: str, entry: dict[str, Any]) -> str:
    return "\n".join([f"{env_id}:", *(f"  {key}: {yaml_value(value)}" for key, value in entry.items())]) + "\n"


def summarise(algo: str, env_id: str, out_dir: Path, trial: int | None = None) -> dict[str, Any]:
    """:return: the content of ``results.json``: every trial, the chosen (best, or ``trial``) trial and its entry"""
    from optuna.trial import TrialState

    tuning = json.loads((out_dir / "tuning.json").read_text())
    settings, base = tuning["settings"], tuning["entry"]
    study = load_study(algo, env_id, out_dir)
    trials: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        start_time, end = t.datetime_start, t.datetime_complete
        seconds = (end - start_time).total_seconds() if start_time is not None and end is not None else None
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": None if t.value is None or not math.isfinite(t.value) else float(t.value),
                "last_step": t.last_step,
                "params": t.params,
                "seconds": seconds,
                "stop_reason": t.user_attrs.get("stop_reason"),
                "enqueued": "fixed_params" in t.system_attrs,  # Optuna's mark of an enqueued trial
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
    entry = None
    if chosen is not None:
        try:
            entry = trial_entry(algo, base, chosen["params"])
        except KeyError as missing:
            raise ValueError(
                f"--trial {chosen['number']} ({chosen['state']}) stopped before sampling every parameter ({missing} "
                "missing): it has no entry"
            ) from None
    gamma = {"file": base.get("gamma", 0.99), "entry": None if entry is None else entry.get("gamma", 0.99)}
    return {
        "algo": algo,
        "env_id": env_id,
        "settings": settings,
        "launches": tuning["launches"],
        "command": " ".join(worker_command(algo, env_id, Path("<out>"), settings)),
        "trials": trials,
        "counts": {state: sum(t["state"] == state for t in trials) for state in sorted({t["state"] for t in trials})},
        "chosen": chosen,
        "entry": None if entry is None else json.loads(json.dumps(entry, default=python_value)),
        "entry_yaml": None if entry is None else entry_yaml(env_id, entry),
        # rl-zoo3 sets VecNormalize's gamma from the file when -optimize starts, from the entry otherwise
        "vecnormalize_gamma": gamma if base.get("normalize") and gamma["file"] != gamma["entry"] else None,
        "software": software_versions(["optuna"]),
    }


def markdown(result: dict[str, Any], out_dir: Path) -> str:
    algo, env_id, settings = result["algo"], result["env_id"], result["settings"]
    rel = out_dir.relative_to(RESULTS.parent.parent) if out_dir.is_relative_to(RESULTS.parent.parent) else out_dir
    lines = [
        f"Tuning of {algo}'s {env_id} entry: `python -m benchmarks.zoo_tuning --cell {algo}:{env_id} --trials "
        f"{settings['trials']} --budget {settings['budget']}`  ",
        f"Each worker: `{result['command'].replace('<out>', str(rel))}` (worker w of a run that found n trials: seed "
        f"{settings['seed']} + n + w; runs: "
        + "; ".join(f"{launch['trials_before']} trials before, seeds {launch['seeds']}" for launch in result["launches"])
        + ").  ",
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
        number = f"{t['number']} (enqueued)" if t.get("enqueued") else t["number"]
        lines.append(f"| {number} | {t['state']} | {t['value']:.1f} | {t['last_step'] or ''} | {minutes} | {params} |")
    others = [t for t in result["trials"] if t["value"] is None]
    if others:
        lines += ["", "Without an objective: " + ", ".join(f"trial {t['number']} {t['state']}" for t in others) + "."]
    if result["chosen"] is not None:
        value = result["chosen"]["value"]
        objective = f"objective {value:.1f}" if value is not None else f"{result['chosen']['state']}, no objective"
        lines += [
            "",
            f"Entry of trial {result['chosen']['number']} ({objective}): the file's entry as the study started with "
            "the trial's keyword arguments on top, as rl-zoo3's objective builds it (`entry.yml`):",
            "",
            "```yaml",
            result["entry_yaml"].rstrip(),
            "```",
            "",
            "Verified only at the file's budget, 2 seeds: "
            f"`python -m benchmarks.zoo_table --profile full --only {algo}:{env_id}`.",
        ]
        if result["vecnormalize_gamma"]:
            lines += [
                "",
                f"VecNormalize discounted with gamma {result['vecnormalize_gamma']['file']} (the file's) in the trials and "
                f"will with {result['vecnormalize_gamma']['entry']} (the entry's): rl-zoo3 sets it once when -optimize "
                "starts; no entry can express the difference.",
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
    parser.add_argument(
        "--enqueue",
        action="append",
        default=[],
        metavar="NAME=VALUE,...",
        help="a trial with these parameters (the sampler's names) first; repeatable; the others sampled",
    )
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
    if args.seed < 0:
        parser.error(f"--seed must be >= 0 (worker w of a run gets seed + trials so far + w), got {args.seed}")
    try:
        enqueued = [parse_params(text) for text in args.enqueue]
    except ValueError as error:
        parser.error(str(error))
    if enqueued and args.report_only:
        parser.error("--enqueue runs trials: not with --report-only")
    settings = {key: getattr(args, key) for key in DEFAULTS}
    out_dir = args.output or RESULTS / "zoo_tuning" / study_name(algo, env_id)
    if args.report_only:
        if not (out_dir / "study.log").exists() or not (out_dir / "tuning.json").exists():
            parser.error(f"--report-only: no study in {out_dir}")
        codes: list[int] = []
    else:
        try:
            codes = run_workers(algo, env_id, out_dir, settings, args.workers, enqueued)
        except (RuntimeError, ValueError) as error:
            parser.error(str(error))
    try:
        result = summarise(algo, env_id, out_dir, args.trial)
    except (FileNotFoundError, KeyError, ValueError) as error:
        message = str(error.args[0]) if error.args else str(error)  # a KeyError's str() is quoted
        workers = f" (worker exit codes {codes}; their output: {out_dir / 'logs'})" if codes else ""
        raise SystemExit(message + workers) from None
    write_report(result, out_dir)
    values = [t["value"] for t in result["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
    best = f"best {max(values):.1f} (median {np.median(values):.1f})" if values else "no complete trial"
    print(f"{len(result['trials'])} trials, {best}; results: {out_dir}")
    if any(code != 0 for code in codes):
        raise SystemExit(f"worker exit codes {codes}: see {out_dir / 'logs'} (the report covers the trials recorded)")
    return out_dir


if __name__ == "__main__":
    main()
