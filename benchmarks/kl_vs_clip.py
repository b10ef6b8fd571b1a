"""PPOKL against PPOClip on HalfCheetah-v5, each with its shipped zoo entry, with the diagnostics of every update.

The question (issue 15, item 1): does PPOKL with its shipped entry reach, at 1M steps, a mean return within one
standard deviation of PPOClip's with its shipped entry, and if not, what do the diagnostics say about why. The entries
are those of sb3_ppo_variants/zoo/hyperparams/ppo_kl.yml and ppo_clip.yml, built exactly as ``rl_zoo3.train`` builds
them (``benchmarks.common.zoo_entry``, ``runner.spec_from_zoo``: n_envs, VecNormalize with the entry's gamma,
schedules, policy_kwargs). PPOClip's is rl-zoo3's tuned PPO entry (its HalfCheetah-v4 entry: clip 0.1, 256x256 ReLU
networks, log_std_init -2, Adam 2e-5, 20 epochs over 512 steps, gamma 0.98); PPOKL's is the same entry with the
clipping replaced by the adaptive KL penalty (d_targ = 0.01, beta_0 = 1).

PPOKL's entry was the PPO paper's settings (adaptive KL, 64x64 tanh networks, Adam 3e-4, 10 epochs of minibatch 64 over
2048 steps), the entry ppo_kl.yml still gives its other MuJoCo tasks. A third row runs PPOKL with those settings
(``benchmarks/kl_vs_clip_paper.py``, an rl-zoo3 ``-conf`` file): the runs that showed the gap and its cause (the
entries, not the surrogates), kept beside the shipped ones. The runs of PPOKL's shipped entry for seeds 0 and 1 were
made with the entry as a ``-conf`` file before it was shipped (run ids ``ppo_kl_candidate-...``, the same training in
every field): their records say so (``renamed_from``); seed 2 of both shipped entries ran after, a seed the choice of
the entry had not seen.

Per run: the final return (mean of the last 100 training episodes), a deterministic evaluation of the final model (10
episodes, frozen normalisation statistics, raw rewards) and, once per update, the package's diagnostics
(``runner.DIAGNOSTIC_KEYS``: policy_kl, approx_kl, kl_coef (PPOKL), std, the ratio statistics, ess, grad_norm,
clip_fraction (PPOClip)). Report: per row the final return and the evaluation (mean ± std over seeds), the medians of
each diagnostic over the first, middle and last third of the updates, whether PPOKL's mean final return is within one
standard deviation of PPOClip's, and a figure (return, policy_kl, kl_coef, std, ess, grad_norm against timesteps, every
seed).

The shipped entries' runs of seeds 0 and 1 are also runs of ``benchmarks.zoo_table``'s ``full`` profile (the same run
ids and specs: zoo budget 1M steps, 10 evaluation episodes, the same record keys): each experiment copies the other's
finished runs instead of running them again (``runner.reuse_records``, the profiles' ``reuse``).

    python -m benchmarks.kl_vs_clip                  # profile quick: 1M steps, seeds 0-2 (paper row: 0, 1); resumes
    python -m benchmarks.kl_vs_clip --smoke          # CI smoke test
    python -m benchmarks.kl_vs_clip --report-only    # the report from the stored results

Results go to ``benchmarks/results/kl_vs_clip/<profile>/``; the same command resumes an interrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.kl_vs_clip_paper import paper_entry
from benchmarks.runner import DIAGNOSTIC_KEYS, RunSpec, algorithm_name, curve, final_score, zoo_run

ENV_ID = "HalfCheetah-v5"
ALGOS = ("ppo_kl", "ppo_clip")
#: PPOKL with the PPO paper's settings (kl_vs_clip_paper.py): its previous entry
PAPER = "ppo_kl_paper"
PAPER_CONF = "benchmarks/kl_vs_clip_paper.py"
#: the rows of the report: the two shipped entries, then the paper's settings
ROWS = (*ALGOS, PAPER)
NAMES = {PAPER: "PPOKL, paper settings (previous entry)"}
COLORS = dict(zip(ROWS, ("tab:green", "tab:blue", "tab:red"), strict=True))
#: the diagnostics of the figure (beside the return)
FIGURE_KEYS = ("train/policy_kl", "train/kl_coef", "train/std", "train/ess", "train/grad_norm")
THIRDS = ("first", "middle", "last")
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": [0, 1, 2],
        "paper_seeds": [0, 1],
        "steps": 1_000_000,
        "eval_episodes": 10,
        "record_keys": list(DIAGNOSTIC_KEYS),
        "reuse": ["zoo_table/full"],
    },
    "smoke": {
        "seeds": [0],
        "paper_seeds": [0],
        "steps": 2_048,  # two episodes, eight updates
        "eval_episodes": 1,
        "record_keys": list(DIAGNOSTIC_KEYS),
        "overrides": {"ppo_kl": {"n_steps": 256}, "ppo_clip": {"n_steps": 256}, PAPER: {"n_steps": 256}},
    },
}


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """
    :return: per seed, one run per algorithm with its shipped entry (run ids as ``zoo_table``'s), then per seed of
        ``paper_seeds`` the paper's settings (labelled ``row``)
    """
    specs = []
    fields = {"eval_episodes": profile["eval_episodes"], "record_keys": tuple(profile.get("record_keys", ()))}
    overrides = profile.get("overrides", {})
    for seed in profile["seeds"]:
        for algo in ALGOS:
            specs.append(zoo_run(algo, ENV_ID, seed, profile["steps"], overrides=overrides.get(algo), **fields))
    for seed in profile["paper_seeds"]:
        specs.append(
            zoo_run(
                "ppo_kl",
                ENV_ID,
                seed,
                profile["steps"],
                overrides=overrides.get(PAPER),
                labels={"row": PAPER},
                conf=(PAPER_CONF, paper_entry()),
                run_id=f"{PAPER}-{ENV_ID}-s{seed}",
                **fields,
            )
        )
    return specs


def row_of(run: dict) -> str:
    """:return: the report row of a run: its ``row`` label (the paper's settings), else its algorithm"""
    return run["spec"]["labels"].get("row", run["spec"]["algo"])


def members_of(runs: dict[str, dict], row_key: str) -> list[dict]:
    """:return: the runs of a report row, by seed"""
    return sorted((r for r in runs.values() if row_of(r) == row_key), key=lambda r: r["spec"]["seed"])


def row_name(row_key: str, algo: str) -> str:
    """:return: the name of a report row"""
    return NAMES.get(row_key, algorithm_name(algo))


def values(run: dict, key: str) -> np.ndarray:
    """:return: the recorded values of ``key`` (one per update; empty if the algorithm does not log it)"""
    return runner.recorded(run, key)[:, 1]


def thirds(series: np.ndarray) -> list[np.ndarray]:
    """:return: the first, middle and last third of a run's updates"""
    return list(np.array_split(series, 3))


def _median(array: np.ndarray) -> float:
    finite = array[np.isfinite(array)]
    return float(np.median(finite)) if len(finite) else float("nan")


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: one row per algorithm (seeds listed), and the acceptance check"""
    rows = []
    for row_key in ROWS:
        members = members_of(runs, row_key)
        if not members:
            continue
        final = [final_score(r) for r in members]
        evals = [r.get("eval", {}).get("mean", float("nan")) for r in members]
        diagnostics = {}
        recorded = {key for r in members for key in r.get("records", {})}
        for key in [*DIAGNOSTIC_KEYS, *sorted(recorded - set(DIAGNOSTIC_KEYS))]:
            series = [values(r, key) for r in members]
            if not any(len(s) for s in series):
                continue  # not logged by this algorithm
            split = [thirds(s) for s in series]
            diagnostics[key] = {
                "per_seed": [[_median(part) for part in parts] for parts in split],
                "pooled": [_median(np.concatenate([parts[i] for parts in split])) for i in range(3)],
            }
        kwargs = members[0]["spec"]["kwargs"]
        algo = members[0]["spec"]["algo"]
        rows.append(
            {
                "row": row_key,
                "algo": algo,
                "name": row_name(row_key, algo),
                "seeds": [r["spec"]["seed"] for r in members],
                "steps": members[0]["spec"]["steps"],
                "eval_episodes": members[0]["spec"]["eval_episodes"],
                "updates": [len(values(r, "train/policy_kl")) for r in members],
                "episodes": [len(r["episodes"]) for r in members],
                "final_return": final,
                "final_mean": float(np.mean(final)),
                "final_std": float(np.std(final)),
                "eval_return": evals,
                "eval_mean": float(np.mean(evals)),
                "eval_std": float(np.std(evals)),
                "kl_target": kwargs.get("kl_target"),
                "commands": [r["spec"]["labels"]["command"] for r in members],
                "wall_time_s": [r["wall_time_s"] for r in members],
                "diagnostics": diagnostics,
            }
        )
    by_row = {row["row"]: row for row in rows}
    check = {}
    if set(ALGOS) <= set(by_row):
        kl, clip = by_row["ppo_kl"], by_row["ppo_clip"]
        check = {
            "ppo_kl_mean": kl["final_mean"],
            "ppo_clip_mean": clip["final_mean"],
            "ppo_clip_std": clip["final_std"],
            "within_one_std": within_one_std(kl, clip),
            "seeds": [kl["seeds"], clip["seeds"]],
        }
        if PAPER in by_row:
            paper = by_row[PAPER]
            check |= {"paper_mean": paper["final_mean"], "paper_within_one_std": within_one_std(paper, clip)}
    return {"profile": profile, "env": ENV_ID, "rows": rows, "check": check}


def within_one_std(row: dict, clip: dict) -> bool:
    """
    :return: whether a row's mean final return is within one standard deviation (PPOClip's) of PPOClip's or above it:
        the question is whether PPOKL falls short (one-sided, as ``zoo_table.verdict``); a mean above PPOClip's by
        more than that is not a failure
    """
    return bool(row["final_mean"] >= clip["final_mean"] - clip["final_std"])


def _against_clip(within: bool) -> str:
    """:return: how a mean final return stands to PPOClip's, as ``within_one_std`` decided"""
    return "within one standard deviation of or above" if within else "more than one standard deviation below"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.0f} ± {std:.0f}"


def _short(key: str) -> str:
    return key.removeprefix("train/")


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md`` (from ``results.json`` alone); :return: its content"""
    manifest_path = out_dir / "manifest.json"
    command = json.loads(manifest_path.read_text()).get("command", "?") if manifest_path.exists() else "?"
    rows = result["rows"]
    lines = [
        f"Command: `{command}`",
        "",
        f"{result['env']}, each algorithm with its shipped zoo entry (PPOKL's: PPOClip's with the adaptive KL penalty in "
        f"place of the clipping), and PPOKL with the PPO paper's settings, its previous entry (`{PAPER_CONF}`); final "
        "return = mean of the last 100 training "
        "episodes of a run; deterministic evaluation = mean return of the final model over "
        f"{rows[0]['eval_episodes'] if rows else '?'} episodes; mean ± std over seeds (population std).",
        "",
        "| algorithm | steps | seeds | updates | final return (per seed) | deterministic eval (per seed) | zoo command |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{v:.0f}" for v in row["final_return"])
        per_eval = ", ".join(f"{v:.0f}" for v in row["eval_return"])
        lines.append(
            f"| {row['name']} | {row['steps']} | {row['seeds']} | {row['updates'][0]} | "
            f"{_pm(row['final_mean'], row['final_std'])} ({per_seed}) | {_pm(row['eval_mean'], row['eval_std'])} "
            f"({per_eval}) | `{row['commands'][0]}` |"
        )
    for row in rows:
        lines += [
            "",
            f"{row['name']}: median of each diagnostic over the first / middle / last third of the updates (the seeds "
            "pooled; per seed in brackets):",
            "",
            "| diagnostic | first third | middle third | last third |",
            "|---|---|---|---|",
        ]
        for key, stats in row["diagnostics"].items():
            cells = [
                f"{stats['pooled'][i]:.3g} ({', '.join(f'{seed[i]:.3g}' for seed in stats['per_seed'])})" for i in range(3)
            ]
            lines.append(f"| `{_short(key)}` | " + " | ".join(cells) + " |")
    lines += ["", *closing_note(result), "", "![PPOKL and PPOClip on HalfCheetah-v5](kl_vs_clip.png)"]
    text = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(text)
    return text


def closing_note(result: dict[str, Any]) -> list[str]:
    """:return: the acceptance check as measured, and the diagnostics that bear on it (no judgement added)"""
    check = result["check"]
    if not check:
        return ["Acceptance check: not computable (the runs of both algorithms are needed)."]
    gap = check["ppo_kl_mean"] - check["ppo_clip_mean"]
    seeds = [", ".join(map(str, each)) for each in check["seeds"]]
    lines = [
        f"Acceptance check: PPOKL's mean final return {check['ppo_kl_mean']:.0f} is {_against_clip(check['within_one_std'])} "
        f"PPOClip's ({check['ppo_clip_mean']:.0f} ± {check['ppo_clip_std']:.0f}; difference {gap:+.0f}; seeds "
        f"{seeds[0]} and {seeds[1]}).",
    ]
    by_row = {row["row"]: row for row in result["rows"]}
    if "paper_mean" in check:
        lines.append(
            f"{NAMES[PAPER]}: mean final return {check['paper_mean']:.0f}, {_against_clip(check['paper_within_one_std'])} "
            f"PPOClip's (difference {check['paper_mean'] - check['ppo_clip_mean']:+.0f})."
        )
    shown = [by_row[key] for key in ROWS if key in by_row]

    def each(key: str, thirds: tuple[int, ...] = (0, 2)) -> str:
        """:return: every row's pooled median of ``key`` in the given thirds (default: first -> last)"""
        cells = []
        for row in shown:
            stats = row["diagnostics"].get(key)
            if stats:
                values = [f"{stats['pooled'][third]:.3g}" for third in thirds]
                cells.append(f"{row['name']} {' -> '.join(values)}")
        return "; ".join(cells) or "not logged"

    last = (2,)
    lines += [
        "",
        "What the diagnostics say (medians, first -> last third of the updates):",
        "",
        f"- step taken, `policy_kl` (PPOKL's d_targ {by_row['ppo_kl']['kl_target']}): {each('train/policy_kl')};",
        f"- PPOKL's penalty coefficient `kl_coef`: {each('train/kl_coef')};",
        f"- exploration left, `std`: {each('train/std')};",
        f"- off-policyness of the epochs, `ess` (last third): {each('train/ess', last)}; `ratio_max`: "
        f"{each('train/ratio_max', last)};",
        f"- `grad_norm` (last third): {each('train/grad_norm', last)}; updates per run: "
        + "; ".join(f"{row['name']} {row['updates'][0]}" for row in shown)
        + ".",
    ]
    return lines


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """The return and the diagnostics of ``FIGURE_KEYS`` against timesteps: every run, one colour per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    steps = max((row["steps"] for row in result["rows"]), default=1)
    grid = np.linspace(0, steps, 100)[1:]
    styles = ("-", "--", ":", "-.")
    for row_key in ROWS:
        for i, run in enumerate(members_of(runs, row_key)):
            label = f"{row_name(row_key, run['spec']['algo'])}, seed {run['spec']['seed']}"
            style = dict(color=COLORS[row_key], ls=styles[i % len(styles)], lw=1.0, label=label)
            axes.flat[0].plot(grid, curve(run, grid), **style)
            for ax, key in zip(axes.flat[1:], FIGURE_KEYS, strict=True):
                record = runner.recorded(run, key)
                if len(record):
                    ax.plot(record[:, 0], record[:, 1], **style)
    for row in result["rows"]:
        if row["kl_target"] is not None:
            axes.flat[1].axhline(row["kl_target"], color=COLORS[row["row"]], lw=0.8, ls=":", label=f"{row['name']} d_targ")
    axes.flat[0].set_title("return (mean of the last 10 training episodes)")
    for ax, key in zip(axes.flat[1:], FIGURE_KEYS, strict=True):
        ax.set_title(_short(key))
        if key in ("train/policy_kl", "train/kl_coef") and ax.lines:
            ax.set_yscale("log")
    for ax in axes.flat:
        ax.set_xlabel("timesteps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{ENV_ID}: PPOKL and PPOClip with their shipped zoo entries, and PPOKL with the PPO paper's settings")
    fig.tight_layout()
    fig.savefig(out_dir / "kl_vs_clip.png", dpi=110)
    plt.close(fig)


EXPERIMENT = runner.Experiment("kl_vs_clip", __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
