"""An rl-zoo3-style results table: our four algorithms beside SB3 PPO, SB3 A2C and sb3-contrib TRPO.

Each algorithm runs with its shipped zoo hyperparameters: ours from this package's hyperparams/<key>.yml, the peers
from rl-zoo3's own ppo.yml / a2c.yml / trpo.yml (for a MuJoCo v5 task without an entry of its own, the peer's v4
entry, else its v3 or v2 one: the tasks are the same family; :func:`own_entry`). A run is built as ``rl_zoo3.train``
builds it (n_envs, VecNormalize with the algorithm's gamma, linear schedules, policy_kwargs); its result is the mean
return of ``eval_episodes`` deterministic evaluation episodes of the final model (frozen normalisation statistics, raw
rewards), and a cell is the mean ± std over seeds, with the zoo command that reproduces it.
LunarLander-v3 needs Box2D (``gymnasium[box2d]``, part of this package's ``benchmarks`` extra, binary wheels);
without it that column is skipped and said so.

Profiles:

- ``full`` = the verification of our hyperparameter files (issue 15, item 3): every environment with an entry in one
  of our four files (:data:`FULL_ENVS`), each of our algorithms only where its own file has an entry for it (no run
  falls back to ``default``), at the entry's budget (n_timesteps), seeds 0 and 1, 10 evaluation episodes, the
  package's diagnostics recorded once per update (``runner.DIAGNOSTIC_KEYS``). Each cell is set beside its peer's
  published rl-zoo3 number with a verdict (:func:`verdict`; peers: :data:`PEER_OF`). Its PPOKL and PPOClip runs on
  HalfCheetah-v5 are those of ``benchmarks.kl_vs_clip`` (profile quick), and each reuses the other's finished runs;
- ``full-peers`` = the same environments and settings for the three peers, each where rl-zoo3 has an entry for the
  task (as above), against its own published number: the reruns that check this protocol against the published
  table, run as machine time allows (not part of ``full``: they would double its cost);
- ``quick`` = all seven algorithms on six environments, seeds 0, 1, budgets capped at 100k steps (classic control
  and MuJoCo), 10 evaluation episodes (under-trained wherever the zoo budget is larger: the table says which cells
  were capped).

    python -m benchmarks.zoo_table --profile quick                 # the committed results
    python -m benchmarks.zoo_table --profile full --workers 2      # resumes where it stopped
    python -m benchmarks.zoo_table --profile full --only ppo_kl:Hopper-v5   # one cell, the other rows kept
    python -m benchmarks.zoo_table --profile full-peers --workers 2
    python -m benchmarks.zoo_table --smoke                         # CI smoke test (seconds)
    python -m benchmarks.zoo_table --profile quick --report-only   # the report from the stored results

Results go to ``benchmarks/results/zoo_table/<profile>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.common import zoo_entries
from benchmarks.runner import DIAGNOSTIC_KEYS, PEERS, RunSpec, algorithm_name, zoo_run
from sb3_ppo_variants.zoo import ZOO_ALGOS

ALGOS = [*ZOO_ALGOS, *PEERS]
#: the environments of the ``quick`` table
ENVS = ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "LunarLander-v3", "HalfCheetah-v5", "Hopper-v5"]
#: the rl-zoo3 algorithm whose published number each algorithm is compared with: SB3's PPO for the PPO family,
#: sb3-contrib's TRPO for TRPOKL, SB3's A2C for REINFORCE (SB3 has no REINFORCE; A2C is the nearest policy gradient);
#: a peer with its own number (profile ``full-peers``)
PEER_OF = {"reinforce": "a2c", "ppo_kl": "ppo", "ppo_clip": "ppo", "trpo_kl": "trpo", **{peer: peer for peer in PEERS}}


def mujoco(env_id: str) -> bool:
    """Whether ``env_id`` is one of gymnasium's MuJoCo tasks."""
    import gymnasium as gym

    return str(gym.spec(env_id).entry_point).startswith("gymnasium.envs.mujoco")


def own_entry(algo: str, env_id: str) -> str | None:
    """
    The entry of ``algo``'s zoo file that stands for ``env_id``: its own; for a peer on a MuJoCo v5 task without one,
    its v4, else v3, else v2 entry (rl-zoo3 lists older ids of the same tasks).

    :return: the entry's id, or None: no entry (ours then fall back to the file's ``default``)
    """
    entries = zoo_entries(algo)
    candidates = [env_id]
    if algo in PEERS and env_id.endswith("-v5") and mujoco(env_id):
        candidates += [re.sub(r"-v5$", f"-v{version}", env_id) for version in (4, 3, 2)]
    return next((candidate for candidate in candidates if candidate in entries), None)


def entry_environments() -> list[str]:
    """:return: every environment with an entry in one of our four files: those of ``ENVS`` in its order, then the
    others alphabetically"""
    listed = {env_id for algo in ZOO_ALGOS for env_id in zoo_entries(algo) if env_id != "default"}
    return [env for env in ENVS if env in listed] + sorted(listed - set(ENVS))


FULL_ENVS = entry_environments()
FULL: dict[str, Any] = {
    "envs": FULL_ENVS,
    "algos": list(ZOO_ALGOS),
    "own_entries": True,  # no run where the algorithm's file has no entry for the environment
    "seeds": [0, 1],
    "caps": {},
    "eval_episodes": 10,
    "record_keys": list(DIAGNOSTIC_KEYS),
    "reuse": ["kl_vs_clip/quick"],
    "verdicts": True,  # each cell beside its peer's published number, with a verdict
}
PROFILES = {
    "full": FULL,
    "full-peers": {**FULL, "algos": list(PEERS), "reuse": []},
    "quick": {"envs": ENVS, "seeds": [0, 1], "caps": {"classic": 100_000, "mujoco": 100_000}, "eval_episodes": 10},
    "smoke": {
        "envs": ["CartPole-v1"],
        "seeds": [0],
        "caps": {"classic": 2_048, "mujoco": 2_048},
        "eval_episodes": 1,
        "overrides": {"reinforce": {"n_steps": 1000}},  # one update within the tiny budget
    },
}

# rl-zoo3's published table (benchmark.md of DLR-RM/rl-baselines3-zoo): one trained agent per cell, evaluated for
# ~150k steps; (mean, std, training steps). Its LunarLander / MuJoCo rows are v2 / v3 tasks, the closest to ours. The
# Walker2d and Swimmer rows are from its version of 22e3ff2 (rl-zoo3 2.8); it has no MuJoCo InvertedPendulum,
# InvertedDoublePendulum or Reacher row for PPO, A2C or TRPO (only their PyBullet versions): those cells say so.
ZOO_BENCHMARK_URL = "https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md"
ZOO_BENCHMARK_CSV = Path(__file__).with_name("zoo_benchmark.csv")


def published_zoo_numbers() -> dict[str, dict[str, tuple[float, float, str]]]:
    """:return: the rows copied from benchmark.md (``zoo_benchmark.csv``): algo -> env (ours) -> (mean, std, training steps)"""
    published: dict[str, dict[str, tuple[float, float, str]]] = {}
    with open(ZOO_BENCHMARK_CSV, newline="") as file:
        for row in csv.DictReader(file):
            published.setdefault(row["algo"], {})[row["env"]] = (
                float(row["mean"]),
                float(row["std"]),
                row["budget"].replace("(", " ("),
            )
    return published


def available(env_id: str) -> bool:
    return env_id != "LunarLander-v3" or importlib.util.find_spec("Box2D") is not None


def entry_note(entry: str, env_id: str) -> str:
    """:return: the note of a run of another version's entry, e.g. ``v4 entry run on the v5 task`` ('' if none)"""
    if entry == env_id:
        return ""
    version = entry.rsplit("-", 1)[1]
    note = f"{version} entry run on the {env_id.rsplit('-', 1)[1]} task"
    # gymnasium registers the v2 / v3 MuJoCo tasks for mujoco-py only: the command itself needs it
    return note + f"; the {version} id needs mujoco-py" if version in ("v2", "v3") else note


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: every (environment, seed, algorithm) run of the profile, with the algorithm's zoo entry (with
    ``own_entries``: only where the algorithm's file has an entry for the environment)"""
    specs = []
    for env_id in profile["envs"]:
        if not available(env_id):
            continue
        cap = profile["caps"].get("mujoco" if mujoco(env_id) else "classic")
        for seed in profile["seeds"]:
            for algo in profile.get("algos", ALGOS):
                entry = own_entry(algo, env_id)
                if entry is None and profile.get("own_entries"):
                    continue
                source = entry if entry != env_id else None
                specs.append(
                    zoo_run(
                        algo,
                        env_id,
                        seed,
                        cap=cap,
                        entry_id=source,
                        overrides=profile.get("overrides", {}).get(algo),
                        labels={"entry": entry or env_id, "note": entry_note(entry or env_id, env_id)},
                        eval_episodes=profile["eval_episodes"],
                        record_keys=tuple(profile.get("record_keys", ())),
                    )
                )
    return specs


def verdict(mean: float, published: tuple[float, float, str] | None) -> dict[str, Any]:
    """
    A cell against its peer's published number: within one standard deviation when ``mean >= published mean -
    published std``, else short by ``published mean - mean``.

    The standard deviation is the published one (the spread of the peer agent's evaluation episodes) and not ours:
    ours is over two seeds, half the difference of two numbers, too noisy to set the bar (and 0 wherever both seeds
    agree, e.g. CartPole's 500). One-sided: the issue asks whether an entry falls short; above the published number
    is within.

    :param mean: our mean over seeds
    :param published: the peer's (mean, std, budget) from ``published_zoo_numbers``, None if it has none for the task
    :return: the fields of the row: ``published`` ([mean, std, budget] or None), ``shortfall`` (published mean - mean)
        and ``within_one_std`` (None without a published number)
    """
    if published is None:
        return {"published": None, "shortfall": None, "within_one_std": None}
    shortfall = published[0] - mean
    return {"published": list(published), "shortfall": shortfall, "within_one_std": bool(shortfall <= published[1])}


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: one row per (algorithm, environment), over the seeds; with
    ``verdicts``, each row beside its peer's published number (:func:`verdict`) and the cells left out for want of an
    entry (``not_run``)"""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs.values():
        spec = run["spec"]
        cell = cells.setdefault(
            (spec["algo"], spec["env_id"]),
            {"evals": [], "seeds": [], "commands": [], "steps": spec["steps"], **spec["labels"], "wall_time_s": []},
        )
        cell["evals"].append(run["eval"]["mean"])
        cell["seeds"].append(spec["seed"])
        cell["commands"].append(spec["labels"]["command"])
        cell["wall_time_s"].append(run["wall_time_s"])
    envs = profile["envs"]
    skipped = [env for env in envs if not available(env)]
    published = published_zoo_numbers()
    rows = []
    for (algo, env_id), cell in sorted(cells.items(), key=lambda kv: (ALGOS.index(kv[0][0]), envs.index(kv[0][1]))):
        cell.pop("command", None)
        mean = float(np.mean(cell["evals"]))
        row = {
            "algo": algorithm_name(algo),
            "key": algo,
            "env": env_id,
            "mean": mean,
            "std": float(np.std(cell["evals"])),
            **cell,
            "capped": cell["steps"] < cell["zoo_steps"],
        }
        if profile.get("verdicts"):
            row |= {"peer": PEER_OF[algo], **verdict(mean, published.get(PEER_OF[algo], {}).get(env_id))}
        rows.append(row)
    result = {"profile": profile, "skipped_envs": skipped, "rows": rows}
    if profile.get("verdicts"):
        algos = profile.get("algos", ALGOS)
        result["not_run"] = [[algo, env] for algo in algos for env in envs if own_entry(algo, env) is None]
    return result


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its tables"""
    if result["profile"].get("verdicts"):
        text = verdict_markdown(result, out_dir)
    else:
        envs = [env for env in result["profile"]["envs"] if any(row["env"] == env for row in result["rows"])]
        text = markdown(result, envs, out_dir)
    (out_dir / "results.md").write_text(text + "\n")
    return text


def _command(out_dir: Path) -> str:
    manifest = out_dir / "manifest.json"
    return json.loads(manifest.read_text())["command"] if manifest.exists() else "?"


def budget_text(steps: int) -> str:
    """:return: a budget as rl-zoo3's table writes it: ``1M``, ``500k``"""
    if steps >= 1_000_000:
        return f"{steps / 1e6:g}M"
    return f"{steps / 1e3:g}k" if steps >= 1_000 else str(steps)


def verdict_text(row: dict[str, Any], seeds: list[int]) -> str:
    """:return: the verdict column of a row of ``summarise`` (with ``verdicts``) when the profile's seeds are ``seeds``"""
    if row["within_one_std"] is None:
        text = "no published number"
    elif row["within_one_std"]:
        text = "within 1 std of the peer"
    else:
        text = f"short by {row['shortfall']:.1f} (> 1 std)"
    missing = [seed for seed in seeds if seed not in row["seeds"]]
    return f"{text}; incomplete: seeds {missing} missing" if missing else text


def peer_mapping(algos: list[str]) -> str:
    """:return: which peer each of ``algos`` is compared with, e.g. ``PPOKL and PPOClip with PPO (SB3)``"""
    groups: dict[str, list[str]] = {}
    for algo in algos:
        groups.setdefault(PEER_OF[algo], []).append(algo)
    return "; ".join(
        f"{algorithm_name(peer)} with its own"
        if members == [peer]
        else f"{' and '.join(map(algorithm_name, members))} with {algorithm_name(peer)}"
        for peer, members in groups.items()
    )


def verdict_markdown(result: dict[str, Any], out_dir: Path) -> str:
    """The report of a profile with ``verdicts``: one line per cell, beside its peer's published number."""
    profile, rows = result["profile"], result["rows"]
    lines = [
        f"Command: `{_command(out_dir)}`  ",
        f"Seeds {profile['seeds']}; each cell: mean ± std over seeds (population std) of the mean return of "
        f"{profile['eval_episodes']} deterministic evaluation episodes of the final model, at the entry's budget "
        "(n_timesteps; * = capped below it).  ",
        f"Peer's number: rl-zoo3's published one ([benchmark.md]({ZOO_BENCHMARK_URL}): one agent per cell, its own "
        f"budget and task version); {peer_mapping(profile.get('algos', ALGOS))}.  ",
        "Verdict: within 1 std of the peer when mean >= published mean - published std; else short by "
        "published mean - mean (the published std: ours over two seeds is too noisy to set the bar).",
        "",
        "| algorithm | environment | budget | seeds | mean ± std | peer | peer's published number | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        published = row["published"]
        number = "no published number" if published is None else f"{published[0]:.1f} ± {published[1]:.1f} @ {published[2]}"
        lines.append(
            f"| {row['algo']} | {row['env']} | {budget_text(row['steps'])}{'*' if row['capped'] else ''} | {row['seeds']} "
            f"| {row['mean']:.1f} ± {row['std']:.1f} | {algorithm_name(row['peer'])} | {number} "
            f"| {verdict_text(row, profile['seeds'])} |"
        )
    within = [row for row in rows if row["within_one_std"]]
    short = [row for row in rows if row["within_one_std"] is False]
    unpublished = [row for row in rows if row["within_one_std"] is None]
    lines += [
        "",
        f"Within 1 std of the peer: {len(within)} of {len(rows)} cells; short: "
        + (", ".join(f"{row['algo']} / {row['env']} (by {row['shortfall']:.1f})" for row in short) or "none")
        + f"; no published number: {len(unpublished)}.",
    ]
    if result.get("not_run"):
        cells = ", ".join(f"{algorithm_name(algo)} / {env}" for algo, env in result["not_run"])
        lines += ["", f"Not run (the algorithm's file has no entry for the environment): {cells}."]
    if result["skipped_envs"]:
        lines += ["", f"Skipped (Box2D not installed): {', '.join(result['skipped_envs'])}."]
    lines += commands(rows)
    return "\n".join(lines)


def commands(rows: list[dict[str, Any]]) -> list[str]:
    """:return: the lines that list the zoo command of every row"""
    lines = ["", "Commands (one per seed; `-n` only where the budget differs from the zoo's):", ""]
    for row in rows:
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"- {row['algo']} / {row['env']}{note}: `{row['commands'][0]}` (seeds {row['seeds']})")
    return lines


def markdown(result: dict, envs: list[str], out_dir: Path) -> str:
    """The report of the ``quick`` profile: one column per environment, then rl-zoo3's published numbers."""
    command = _command(out_dir)
    by_cell = {(row["key"], row["env"]): row for row in result["rows"]}
    lines = [
        f"Command: `{command}`  ",
        f"Seeds {result['profile']['seeds']}; each cell: mean ± std over seeds of the mean return of "
        f"{result['profile']['eval_episodes']} deterministic evaluation episodes of the final model; "
        "* = budget capped below the zoo's n_timesteps.",
        "",
        "| algorithm | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for algo in ALGOS:
        cells = []
        for env in envs:
            row = by_cell.get((algo, env))
            cells.append("" if row is None else f"{row['mean']:.1f} ± {row['std']:.1f}{'*' if row['capped'] else ''}")
        lines.append(f"| {algorithm_name(algo)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"rl-zoo3's published numbers ([benchmark.md]({ZOO_BENCHMARK_URL}): one agent per cell, its own budget) "
        "and the difference of our peer runs from them:",
        "",
        "| algorithm | " + " | ".join(envs) + " |",
        "|---|" + "---|" * len(envs),
    ]
    for algo, published in published_zoo_numbers().items():
        cells = []
        for env in envs:
            mean, std, budget = published[env]
            row = by_cell.get((algo, env))
            ours = "" if row is None else f"; here {row['mean'] - mean:+.1f}"
            cells.append(f"{mean:.1f} ± {std:.1f} @ {budget}{ours}")
        lines.append(f"| {algorithm_name(algo)} | " + " | ".join(cells) + " |")
    if result["skipped_envs"]:
        lines += ["", f"Skipped (Box2D not installed): {', '.join(result['skipped_envs'])}."]
    lines += commands(result["rows"])
    return "\n".join(lines)


EXPERIMENT = runner.Experiment(
    "zoo_table", __doc__, PROFILES, "quick", make_specs, summarise, write_report, row_key=lambda row: (row["key"], row["env"])
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
