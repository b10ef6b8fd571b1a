"""The step-size picture: how far each algorithm moves its policy per update, in KL units.

On CartPole-v1 with each algorithm's shipped zoo hyperparameters (sb3_ppo_variants/zoo/hyperparams/<key>.yml),
REINFORCE, PPOKL, PPOClip and TRPOKL are trained for the same number of environment steps (100k: the zoo budget of
PPOKL, PPOClip and TRPOKL; REINFORCE's zoo budget is 500k, truncated here), seed 0 (``--profile full``: seeds 0, 1
and 2). After every update the runner reads ``train/policy_kl`` (the exact mean KL(pi_old || pi_new) over the
rollout states, the package's shared diagnostic) and, for PPOKL, ``train/kl_coef`` (the beta used by that update).
One figure: KL per update on a log scale against environment steps, beta on a twin axis.

Note: the CartPole entries of PPOKL and PPOClip use a linear learning-rate schedule (``lin_0.001``): as the rate
decays to 0 the steps shrink; PPOKL holds beta (no decrease) once the rate is below half its start
(``kl_hold_lr_fraction``), where it used to halve beta at every update down to ``kl_coef_min``
(``step_size_before_beta_hold.png``: the previous code's figure).

    python -m benchmarks.step_size                  # the committed results (profile quick: a few minutes on 2 cores)
    python -m benchmarks.step_size --profile full   # seeds 0, 1, 2
    python -m benchmarks.step_size --smoke          # CI smoke test (seconds)
    python -m benchmarks.step_size --report-only    # the report from the stored results

Results go to ``benchmarks/results/step_size/`` (profile quick, where they were first committed) or
``benchmarks/results/step_size/<profile>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.common import RESULTS, zoo_entry
from benchmarks.runner import RunSpec, algorithm_name, recorded, spec_from_zoo, zoo_command
from sb3_ppo_variants.zoo import ZOO_ALGOS

ENV_ID = "CartPole-v1"
ALGOS = list(ZOO_ALGOS)
COLORS = dict(zip(ALGOS, ("tab:red", "tab:green", "tab:blue", "tab:purple"), strict=True))
KEYS = ("train/policy_kl", "train/kl_coef", "train/kl_target")
PROFILES = {
    "quick": {"seeds": [0], "steps": 100_000, "eval_episodes": 10},
    "full": {"seeds": [0, 1, 2], "steps": 100_000, "eval_episodes": 10},
    "smoke": {
        "seeds": [0],
        "steps": 4_000,
        "eval_episodes": 1,
        "overrides": {"reinforce": {"n_steps": 1000}},  # several updates within the tiny budget
    },
}


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: one run per (seed, algorithm), with the algorithm's zoo entry, recording ``KEYS`` after every update"""
    specs = []
    for seed in profile["seeds"]:
        for algo in ALGOS:
            entry = zoo_entry(algo, ENV_ID)
            entry.update(profile.get("overrides", {}).get(algo, {}))
            specs.append(
                spec_from_zoo(
                    f"{algo}-{ENV_ID}-s{seed}",
                    algo,
                    ENV_ID,
                    seed,
                    entry,
                    steps=profile["steps"],
                    eval_episodes=profile["eval_episodes"],
                    record_keys=KEYS,
                    labels={"command": zoo_command(algo, ENV_ID, seed, f" -n {profile['steps']}")},
                )
            )
    return specs


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: per algorithm, the distribution of the policy KL per update"""
    rows = []
    for algo in ALGOS:
        members = [run for run in runs.values() if run["spec"]["algo"] == algo]
        if not members:
            continue
        kls = np.concatenate([recorded(run, "train/policy_kl")[:, 1] for run in members])
        kls = kls[np.isfinite(kls)]
        row = {
            "algo": algorithm_name(algo),
            "updates_per_run": [len(recorded(run, "train/policy_kl")) for run in members],
            "policy_kl_median": float(np.median(kls)),
            "policy_kl_p10_p90": [float(np.percentile(kls, 10)), float(np.percentile(kls, 90))],
            "policy_kl_max": float(kls.max()),
            "final_eval_mean_per_seed": [run.get("eval", {}).get("mean") for run in members],
            "wall_time_s_per_seed": [run["wall_time_s"] for run in members],
            "commands": [run["spec"]["labels"]["command"] for run in members],
        }
        if algo == "ppo_kl":
            betas = np.concatenate([recorded(run, "train/kl_coef")[:, 1] for run in members])
            row["kl_coef_min_max"] = [float(betas.min()), float(betas.max())]
        rows.append(row)
    return {"env": ENV_ID, "rows": rows, "profile": profile}


def plot(runs: dict, path: Path, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    beta_ax = ax.twinx()
    for algo in ALGOS:
        members = sorted((r for r in runs.values() if r["spec"]["algo"] == algo), key=lambda r: r["spec"]["seed"])
        for i, run in enumerate(members):
            kl = recorded(run, "train/policy_kl")
            label = f"{algorithm_name(algo)}: policy KL per update" if i == 0 else None
            marker = "o" if len(kl) < 150 else None  # few updates (REINFORCE, TRPOKL): show each one
            ax.plot(
                kl[:, 0],
                np.clip(kl[:, 1], 1e-8, None),
                color=COLORS[algo],
                lw=0.9,
                alpha=0.8,
                label=label,
                marker=marker,
                ms=2.5,
            )
            if algo == "ppo_kl":
                beta = recorded(run, "train/kl_coef")
                beta_label = "PPOKL: beta (right axis)" if i == 0 else None
                beta_ax.plot(beta[:, 0], beta[:, 1], color="black", lw=0.8, ls="--", alpha=0.45, label=beta_label)
    ax.axhline(0.01, color="tab:green", ls=":", lw=1.2, label="d_targ = 0.01 (PPOKL) = max_kl (TRPOKL)")
    ax.set_yscale("log")
    beta_ax.set_yscale("log")
    ax.set_xlim(0, steps)
    ax.set_xlabel(f"environment steps ({ENV_ID}, zoo hyperparameters, one line per seed)")
    ax.set_ylabel("train/policy_kl = mean KL(pi_old || pi_new) over the rollout states")
    beta_ax.set_ylabel("PPOKL beta (train/kl_coef)")
    handles = ax.get_legend_handles_labels()
    beta_handles = beta_ax.get_legend_handles_labels()
    ax.legend(handles[0] + beta_handles[0], handles[1] + beta_handles[1], fontsize=8, loc="lower left", framealpha=0.9)
    ax.set_title("Step size per update: REINFORCE uncontrolled, PPOClip implicit, PPOKL penalised, TRPOKL constrained")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """``per_update.json`` (the recorded values of every run) and the figure."""
    per_update = {
        run_id: {key: run["records"].get(key, []) for key in KEYS if run["records"].get(key)} for run_id, run in runs.items()
    }
    (out_dir / "per_update.json").write_text(json.dumps(per_update) + "\n")
    plot(runs, out_dir / "step_size.png", result["profile"]["steps"])


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its content"""
    lines = [
        "| algorithm | updates / run | median policy KL per update | 10th to 90th percentile | max | PPOKL beta range | "
        "final eval (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        beta = "" if "kl_coef_min_max" not in row else f"{row['kl_coef_min_max'][0]:.3g} to {row['kl_coef_min_max'][1]:.3g}"
        evals = ", ".join("?" if v is None else f"{v:.0f}" for v in row["final_eval_mean_per_seed"])
        lines.append(
            f"| {row['algo']} | {row['updates_per_run']} | {row['policy_kl_median']:.2e} | "
            f"{row['policy_kl_p10_p90'][0]:.2e} to {row['policy_kl_p10_p90'][1]:.2e} | "
            f"{row['policy_kl_max']:.2e} | {beta} | {evals} |"
        )
    manifest = json.loads((out_dir / "manifest.json").read_text()) if (out_dir / "manifest.json").exists() else {}
    text = f"Command: `{manifest.get('command', '?')}`\n\n" + "\n".join(lines) + "\n\n![step size](step_size.png)\n"
    (out_dir / "results.md").write_text(text)
    return text


FOLDERS = {"quick": RESULTS / "step_size"}  # where the profile was first committed
EXPERIMENT = runner.Experiment(
    "step_size", __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures, FOLDERS
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
