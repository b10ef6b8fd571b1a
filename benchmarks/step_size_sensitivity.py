"""Step-size sensitivity: final return and policy KL per update against each algorithm's step-size knob.

The tutorials' central claim: plain policy gradient is sensitive to its step size (the learning rate), while the
trust region (TRPO), the KL penalty (PPO-penalty) and the clip (PPO-clip) make the update robust to it. Here:

- REINFORCE, PPOKL and PPOClip over 5 log-spaced learning rates ``LEARNING_RATES`` (1e-4 ... 1e-2, a factor sqrt(10)
  apart); TRPOKL over 5 log-spaced KL bounds ``TARGET_KLS`` (``target_kl`` 1e-3 ... 1e-1; its learning rate is the
  critic's);
- on CartPole-v1 and Pendulum-v1, each algorithm with its shipped zoo entry (sb3_ppo_variants/zoo/hyperparams/<key>.yml)
  and only the knob changed; rl-zoo3's linear schedules (``lin_x``) are replaced by the constant x, so that the knob is
  the step size for the whole run;
- the same budget for every algorithm of an environment, several seeds; REINFORCE with one environment and 1000 steps
  per update (``REINFORCE_BATCH``: its zoo batches would give it one to six updates in these budgets).

Per (environment, algorithm, knob value): the final return (mean of the last 100 training episodes, and a
deterministic evaluation) and the median of ``train/policy_kl`` (the exact mean KL(pi_old || pi_new) over the
rollout states after each update: the step actually taken). One figure: both against the knob, relative to the middle
value of its grid (1e-3 for learning rates, 0.01 for target_kl).

    python -m benchmarks.step_size_sensitivity                  # profile quick (3 seeds; see PROFILES for the budget)
    python -m benchmarks.step_size_sensitivity --profile full   # 5 seeds, the zoo's 100k steps on both tasks
    python -m benchmarks.step_size_sensitivity --smoke          # CI smoke test
    python -m benchmarks.step_size_sensitivity --report-only    # the report from the stored results

Results go to ``benchmarks/results/step_size_sensitivity/<profile>/``; an interrupted run resumes (``--workers 1`` for
one process at a time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.common import zoo_entry
from benchmarks.runner import RunSpec, algorithm_name, final_score, recorded, spec_from_zoo

ENVS = ("CartPole-v1", "Pendulum-v1")
ALGOS = ("reinforce", "ppo_kl", "ppo_clip", "trpo_kl")
#: the learning rates of REINFORCE, PPOKL and PPOClip, and TRPOKL's KL bounds: 5 log-spaced values each
LEARNING_RATES = [float(x) for x in np.logspace(-4, -2, 5)]
TARGET_KLS = [float(x) for x in np.logspace(-3, -1, 5)]
#: each algorithm's knob: (argument, grid, middle value of the grid)
KNOBS = {algo: ("learning_rate", LEARNING_RATES, 1e-3) for algo in ALGOS} | {"trpo_kl": ("target_kl", TARGET_KLS, 1e-2)}
COLORS = dict(zip(ALGOS, ("tab:red", "tab:green", "tab:blue", "tab:purple"), strict=True))
KEYS = ("train/policy_kl",)
#: the episodes of the initial return (where a run started from)
FIRST = 10
#: an algorithm whose best gain over its initial return (at its best step size) is below this fraction of the largest
#: gain on the task did not learn the task in the budget: its small spread is no robustness, and it stays out of the
#: sensitivity order
LEARNED_FRACTION = 0.5
#: REINFORCE's zoo batches (8 environments x 4000 or 2000 steps) give one to six updates in these budgets: one
#: environment and 1000 steps per update instead (no episode carried over between updates, about 50 and 100 updates)
REINFORCE_BATCH = {"n_envs": 1, "n_steps": 1000}
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": [0, 1, 2],
        "steps": {"CartPole-v1": 50_000, "Pendulum-v1": 100_000},
        "eval_episodes": 10,
        "overrides": {"reinforce": REINFORCE_BATCH},
    },
    "full": {
        "seeds": [0, 1, 2, 3, 4],
        "steps": {"CartPole-v1": 100_000, "Pendulum-v1": 100_000},
        "eval_episodes": 10,
        "overrides": {"reinforce": REINFORCE_BATCH},
    },
    "smoke": {
        "seeds": [0],
        "steps": {"CartPole-v1": 1_000, "Pendulum-v1": 1_000},
        "eval_episodes": 1,
        "grid": [4],  # the largest step of each grid
        # several updates within the tiny budget
        "overrides": {
            "reinforce": {"n_steps": 400, "n_envs": 2},
            "trpo_kl": {"n_steps": 128},
            "ppo_kl": {"n_steps": 64},
            "ppo_clip": {"n_steps": 64},
        },
    },
}


def constant_schedules(entry: dict[str, Any]) -> dict[str, Any]:
    """:return: the zoo entry with each ``lin_x`` schedule replaced by the constant x"""
    return {k: float(v[4:]) if isinstance(v, str) and v.startswith("lin_") else v for k, v in entry.items()}


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: one run per (environment, seed, algorithm, knob value), in that order (an interrupted suite has whole
    sweeps of the first seeds)"""
    specs = []
    for env_id in ENVS:
        for seed in profile["seeds"]:
            for algo in ALGOS:
                knob, grid, _ = KNOBS[algo]
                for value in [grid[i] for i in profile.get("grid", range(len(grid)))]:
                    entry = constant_schedules(zoo_entry(algo, env_id))
                    entry.update(profile.get("overrides", {}).get(algo, {}))
                    entry[knob] = value
                    specs.append(
                        spec_from_zoo(
                            f"{algo}-{env_id}-{knob}{value:.2e}-s{seed}",
                            algo,
                            env_id,
                            seed,
                            entry,
                            steps=profile["steps"][env_id],
                            eval_episodes=profile["eval_episodes"],
                            record_keys=KEYS,
                            labels={"knob": knob, "value": value},
                        )
                    )
    return specs


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: one row per (environment, algorithm, knob value), seeds listed"""
    rows = []
    for env_id in ENVS:
        for algo in ALGOS:
            knob, grid, _ = KNOBS[algo]
            for value in grid:
                members = sorted(
                    (r for r in runs.values() if r["spec"]["algo"] == algo and r["spec"]["env_id"] == env_id and
                     np.isclose(r["spec"]["labels"]["value"], value)),
                    key=lambda r: r["spec"]["seed"],
                )  # fmt: skip
                if not members:
                    continue
                kls = [recorded(r, "train/policy_kl")[:, 1] for r in members]
                rows.append(
                    {
                        "env": env_id,
                        "algo": algo,
                        "knob": knob,
                        "value": value,
                        "seeds": [r["spec"]["seed"] for r in members],
                        "final_return": [final_score(r) for r in members],
                        "initial_return": [initial_score(r) for r in members],
                        "eval_return": [r.get("eval", {}).get("mean", float("nan")) for r in members],
                        "median_policy_kl": [float(np.nanmedian(k)) if len(k) else float("nan") for k in kls],
                        "updates": [len(k) for k in kls],
                        "steps": members[0]["spec"]["steps"],
                    }
                )
    return {"rows": rows, "profile": profile}


def initial_score(run: dict, first: int = FIRST) -> float:
    """The mean return of the run's first ``first`` training episodes: where learning started from."""
    returns = [episode[1] for episode in run["episodes"][:first]]
    return float(np.mean(returns)) if returns else float("nan")


def _median(values: list[float]) -> float:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """The figure: per environment, the median final return and median policy KL (over seeds) against the knob."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(ENVS), figsize=(6 * len(ENVS), 8), squeeze=False)
    for col, env_id in enumerate(ENVS):
        for algo in ALGOS:
            rows = [row for row in result["rows"] if row["env"] == env_id and row["algo"] == algo]
            if not rows:
                continue
            middle = KNOBS[algo][2]
            x = np.array([row["value"] / middle for row in rows])
            label = f"{algorithm_name(algo)} ({KNOBS[algo][0]} / {middle:g})"
            for ax, key in ((axes[0, col], "final_return"), (axes[1, col], "median_policy_kl")):
                medians = [_median(row[key]) for row in rows]
                ax.plot(x, medians, color=COLORS[algo], marker="o", label=label)
                for xi, row in zip(x, rows, strict=True):  # every seed
                    ax.scatter([xi] * len(row[key]), row[key], color=COLORS[algo], s=8, alpha=0.35)
        axes[0, col].set_title(f"{env_id}: final return (mean of the last 100 training episodes)")
        axes[1, col].set_title(f"{env_id}: median policy KL per update")
        axes[1, col].set_yscale("log")
        for ax in axes[:, col]:
            ax.set_xscale("log")
            ax.set_xlabel("step-size knob relative to the middle of its grid")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Step-size sensitivity (lines: median over seeds, dots: seeds)")
    fig.tight_layout()
    fig.savefig(out_dir / "step_size_sensitivity.png", dpi=110)
    plt.close(fig)


def _claim(rows: list[dict[str, Any]]) -> list[str]:
    """:return: what the rows of one environment say about the tutorials' claim, as measured (no judgement added)"""
    lines = ["Over each knob's grid (medians over seeds):", ""]
    spreads, gains = {}, {}
    for algo in ALGOS:
        members = [row for row in rows if row["algo"] == algo]
        if not members:
            continue
        returns = [_median(row["final_return"]) for row in members]
        kls = [_median(row["median_policy_kl"]) for row in members]
        initial = _median([value for row in members for value in row.get("initial_return", [])])
        best = members[int(np.nanargmax(returns))]["value"]
        spreads[algo] = max(returns) - min(returns)
        gains[algo] = max(returns) - initial
        lines.append(
            f"- {algorithm_name(algo)}: final return {min(returns):.0f} to {max(returns):.0f} (spread {spreads[algo]:.0f}, "
            f"best at {members[0]['knob']} {best:.2g}; initial return {initial:.0f}, best gain {gains[algo]:.0f}); "
            f"median policy KL {min(kls):.2e} to {max(kls):.2e} (x{max(kls) / min(kls):.0f})"
        )
    finite = [gain for gain in gains.values() if np.isfinite(gain)]
    threshold = LEARNED_FRACTION * max(finite) if finite else float("nan")
    learned = [algo for algo in spreads if not gains[algo] < threshold]  # NaN gains (no initial return) stay in
    order = ", ".join(algorithm_name(algo) for algo in sorted(learned, key=spreads.__getitem__, reverse=True))
    lines += [
        "",
        f"Tutorials' claim (plain policy gradient sensitive to its step size, trust region / penalty / clip robust): "
        f"from the most to the least sensitive return here, {order}.",
    ]
    not_learned = [algorithm_name(algo) for algo in spreads if algo not in learned]
    if not_learned:
        lines.append(
            f"Left out of that order: {', '.join(not_learned)}, whose best gain over its initial return is below "
            f"{LEARNED_FRACTION:.0%} of the largest gain here ({max(finite):.0f}): it did not learn the task at any step "
            "size in this budget, so its spread measures no robustness."
        )
    return lines


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md`` (tables from ``results.json``); :return: its content"""
    import json

    manifest_path = out_dir / "manifest.json"
    command = json.loads(manifest_path.read_text()).get("command", "?") if manifest_path.exists() else "?"
    lines = [f"Command: `{command}`", ""]
    for env_id in ENVS:
        rows = [row for row in result["rows"] if row["env"] == env_id]
        if not rows:
            continue
        lines += [
            f"### {env_id} ({rows[0]['steps']} steps per run)",
            "",
            "| algorithm | knob | value | final return, median (seeds) | deterministic eval, median | "
            "median policy KL per update (median over seeds) | updates |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            seeds = ", ".join(f"{v:.0f}" for v in row["final_return"])
            lines.append(
                f"| {algorithm_name(row['algo'])} | {row['knob']} | {row['value']:.2g} | "
                f"{_median(row['final_return']):.0f} ({seeds}) | {_median(row['eval_return']):.0f} | "
                f"{_median(row['median_policy_kl']):.2e} | {row['updates'][0]} |"
            )
        lines += ["", *_claim(rows), ""]
    lines.append("![step-size sensitivity](step_size_sensitivity.png)")
    text = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(text)
    return text


EXPERIMENT = runner.Experiment(
    "step_size_sensitivity", __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
