"""The PPO tutorial's from-scratch PPO on Pendulum-v1, reproduced with PPOClip (and PPOKL), with ablations.

The tutorial's settings and how they map onto the package (SB3's constructor arguments):

- 64-64 ReLU actor and critic, separate networks: ``net_arch=dict(pi=[64, 64], vf=[64, 64])``,
  ``activation_fn=nn.ReLU``, ``share_features_extractor=False``; PyTorch's default initialisation
  (``ortho_init=False``: SB3's orthogonal initialisation is not the tutorial's);
- separate Adam optimisers, lr 3e-4, eps 1e-8: SB3 has one Adam over all the policy's parameters
  (``optimizer_kwargs=dict(eps=1e-8)``, SB3's own default eps is 1e-5). With no shared parameter and Adam's
  per-parameter (element-wise) state, one Adam over both networks is exactly two Adams with the same lr and eps,
  provided the critic's loss enters with weight 1: ``vf_coef=1.0`` (SB3's 0.5 would halve the critic's gradient,
  which Adam almost, but not exactly (eps), undoes);
- a fixed diagonal Gaussian with variance 0.5: ``log_std_init=0.5 * log(0.5)``, ``learn_std=False`` (the package's
  policy option, SB3 has none);
- whole 200-step episodes per batch, at least 2048 steps: ``n_steps=2200`` with one environment (11 episodes);
- time-limit truncation treated as terminal, no bootstrap: ``truncation_as_terminal=True`` (the package's option);
- Monte-Carlo reward-to-go advantages A = G_t - V(s_t): ``gae_lambda=1.0`` (SB3's GAE with lambda 1 is exactly
  G_t - V(s_t) when no episode is cut by the batch's end); normalised per batch (``normalize_advantage=True``; SB3
  divides by the unbiased std + 1e-8, the tutorial by std + 1e-10, a negligible difference at 2200 samples);
- 10 full-batch epochs: ``n_epochs=10, batch_size=2200``; clip 0.2, gamma 0.99, ``ent_coef=0.0``; no gradient
  clipping: ``max_grad_norm=inf``.

The tutorial reports an average episodic return of -76.99 at its last logged iteration (about 22M steps); its public
training logs at about 1M steps show per-iteration means of -136 to -222.

Rows: the tutorial's settings as PPOClip and as PPOKL (the same settings, KL penalty instead of clip, PPOKL's
defaults for the controller), and PPOClip ablations, each changing one setting back to SB3's way: a learned std,
GAE(0.95) instead of Monte-Carlo returns, bootstrap on truncation; and SB3's PPO defaults (PPOClip with no argument).

Per run: every iteration's mean training return (the mean of the episodes finished in that rollout), their median and
best over the last 20 iterations and over the whole run, and a deterministic evaluation (10 episodes) at the end.

    python -m benchmarks.tutorial_pendulum --workers 1                  # profile quick: ~1M steps, 3 seeds per row
    python -m benchmarks.tutorial_pendulum --profile full --workers 1   # the tutorial's ~22M steps
    python -m benchmarks.tutorial_pendulum --profile diagnostics --workers 2   # why PPOKL trails: see below
    python -m benchmarks.tutorial_pendulum --smoke                      # CI smoke test
    python -m benchmarks.tutorial_pendulum --report-only                # the report from the stored results

Profile ``diagnostics``: seed 0 of the two tutorial rows again (the same runs: training on the CPU is deterministic),
with the package's diagnostics recorded once per update (``runner.DIAGNOSTIC_KEYS`` and the critic's explained
variance); its report adds, per row, the distribution of the KL between consecutive policies (``train/policy_kl``),
PPOKL's beta, the largest ratio and the explained variance.

Results go to ``benchmarks/results/tutorial_pendulum/<profile>/``; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.runner import RunSpec

ENV_ID = "Pendulum-v1"
EPISODE = 200  # Pendulum-v1's time limit
N_STEPS = 2200  # whole 200-step episodes, at least 2048 steps
TUTORIAL_FINAL = -76.99  # the tutorial's last logged iteration (~22M steps)
TUTORIAL_LOGS_1M = (-222.0, -136.0)  # per-iteration means in its logs at ~1M steps
LAST = 20  # the iterations of the "last" statistics


def policy_kwargs(learn_std: bool) -> str:
    """:return: the tutorial's networks, optimiser options and Gaussian (rl-zoo3's string form, ``nn`` in scope)"""
    return (
        "dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.ReLU, share_features_extractor=False, "
        f"ortho_init=False, optimizer_kwargs=dict(eps=1e-8), log_std_init={0.5 * math.log(0.5)!r}, learn_std={learn_std})"
    )


#: the tutorial's settings (rl-zoo3's conventions, as ``benchmarks.common.zoo_kwargs`` reads them)
TUTORIAL: dict[str, Any] = {
    "n_steps": N_STEPS,
    "batch_size": N_STEPS,
    "n_epochs": 10,
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 1.0,
    "normalize_advantage": True,
    "ent_coef": 0.0,
    "vf_coef": 1.0,
    "max_grad_norm": math.inf,
    "truncation_as_terminal": True,
    "policy_kwargs": policy_kwargs(learn_std=False),
}
#: (row, algorithm, arguments): the tutorial as PPOClip and PPOKL, then one change at a time, then SB3's defaults
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("tutorial (PPOClip)", "ppo_clip", {**TUTORIAL, "clip_range": 0.2}),
    ("tutorial (PPOKL)", "ppo_kl", dict(TUTORIAL)),
    ("learned std", "ppo_clip", {**TUTORIAL, "policy_kwargs": policy_kwargs(learn_std=True)}),
    ("GAE 0.95", "ppo_clip", {**TUTORIAL, "gae_lambda": 0.95}),
    ("bootstrap on truncation", "ppo_clip", {**TUTORIAL, "truncation_as_terminal": False}),
    ("SB3 PPO defaults", "ppo_clip", {}),
]
QUICK: dict[str, Any] = {"seeds": [0, 1, 2], "steps": 455 * N_STEPS, "eval_episodes": 10}  # 1,001,000 steps
PROFILES: dict[str, dict[str, Any]] = {
    "quick": QUICK,
    "full": {"seeds": [0, 1, 2], "steps": 10_000 * N_STEPS, "eval_episodes": 10},  # 22M steps
    "smoke": {"seeds": [0], "steps": N_STEPS, "eval_episodes": 1, "record_keys": ["train/policy_kl", "train/kl_coef"]},
    # quick's seed 0 of the tutorial rows, with the diagnostics recorded per update
    "diagnostics": {
        **QUICK,
        "seeds": [0],
        "rows": ["tutorial (PPOClip)", "tutorial (PPOKL)"],
        "record_keys": [*runner.DIAGNOSTIC_KEYS, "train/explained_variance"],
    },
}


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: one run per (row, seed), seed by seed (an interrupted run has every row of the first seeds)"""
    return [
        RunSpec(
            f"{row.replace(' ', '_').replace('(', '').replace(')', '')}-s{seed}",
            algo,
            ENV_ID,
            seed,
            profile["steps"],
            kwargs=dict(kwargs),
            eval_episodes=profile["eval_episodes"],
            labels={"row": row},
            record_keys=tuple(profile.get("record_keys", ())),
        )
        for seed in profile["seeds"]
        for row, algo, kwargs in ROWS
        if "rows" not in profile or row in profile["rows"]
    ]


def iteration_means(run: dict, n_steps: int) -> np.ndarray:
    """:return: per rollout of ``n_steps`` steps, the mean return of the episodes finished in it (NaN if none)"""
    episodes = np.asarray(run["episodes"], dtype=float).reshape(-1, 3)
    if not len(episodes):
        return np.zeros(0)
    iteration = (episodes[:, 0] - 1) // n_steps
    n_iterations = int(iteration.max()) + 1
    return np.array([episodes[iteration == i, 1].mean() if np.any(iteration == i) else np.nan for i in range(n_iterations)])


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: per row, per seed, the statistics of the iteration means and the eval"""
    rows = []
    for row, algo, kwargs in ROWS:
        members = sorted((r for r in runs.values() if r["spec"]["labels"]["row"] == row), key=lambda r: r["spec"]["seed"])
        if not members:
            continue
        n_steps = int(kwargs.get("n_steps", 2048))
        means = [iteration_means(r, n_steps) for r in members]
        rows.append(
            {
                "row": row,
                "algo": algo,
                "seeds": [r["spec"]["seed"] for r in members],
                "steps": members[0]["spec"]["steps"],
                "iterations": [len(m) for m in means],
                "last_median": [float(np.nanmedian(m[-LAST:])) for m in means],
                "last_best": [float(np.nanmax(m[-LAST:])) for m in means],
                "last_worst": [float(np.nanmin(m[-LAST:])) for m in means],
                "run_best": [float(np.nanmax(m)) for m in means],
                "eval": [r["eval"]["mean"] for r in members],
                "wall_time_s": [r["wall_time_s"] for r in members],
            }
            | diagnostics(members)
        )
    return {"rows": rows, "profile": profile}


#: the statistics of the recorded diagnostics, per run: (key, name, function of its per-update values)
DIAGNOSTICS: list[tuple[str, str, Any]] = [
    ("train/policy_kl", "policy_kl_median", np.median),
    ("train/policy_kl", "policy_kl_p90", lambda v: np.percentile(v, 90)),
    ("train/policy_kl", "policy_kl_max", np.max),
    ("train/policy_kl", "policy_kl_above_0.02", lambda v: np.mean(v > 0.02)),
    ("train/ratio_max", "ratio_max_median", np.median),
    ("train/kl_coef", "kl_coef_median", np.median),
    ("train/kl_coef", "kl_coef_below_1e-3", lambda v: np.mean(v < 1e-3)),
    ("train/explained_variance", "explained_variance_last_third", lambda v: np.median(v[-(len(v) // 3) :])),
]


def diagnostics(members: list[dict]) -> dict[str, list[float]]:
    """:return: per statistic of ``DIAGNOSTICS`` whose key every run recorded, its value per run (else nothing)"""
    out: dict[str, list[float]] = {}
    for key, name, statistic in DIAGNOSTICS:
        series = [runner.recorded(r, key)[:, 1] for r in members]
        if all(len(values) for values in series):
            out[name] = [float(statistic(values)) for values in series]
    return out


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its content"""
    manifest_path = out_dir / "manifest.json"
    command = json.loads(manifest_path.read_text()).get("command", "?") if manifest_path.exists() else "?"
    lines = [
        f"Command: `{command}`",
        "",
        f"Tutorial: {TUTORIAL_FINAL} at its last logged iteration (~22M steps); its logs at ~1M steps: per-iteration "
        f"means {TUTORIAL_LOGS_1M[0]:.0f} to {TUTORIAL_LOGS_1M[1]:.0f}.",
        "",
        f"| row | steps | seeds | iteration mean, last {LAST}: median (per seed) | last {LAST}: worst to best (per seed) | "
        "best iteration of the run (per seed) | deterministic eval (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        spans = ", ".join(f"{lo:.0f} to {hi:.0f}" for lo, hi in zip(row["last_worst"], row["last_best"], strict=True))
        lines.append(
            f"| {row['row']} | {row['steps']} | {len(row['seeds'])} | {np.median(row['last_median']):.0f} "
            f"({_fmt(row['last_median'])}) | {spans} | {max(row['run_best']):.0f} ({_fmt(row['run_best'])}) | "
            f"{np.median(row['eval']):.0f} ({_fmt(row['eval'])}) |"
        )
    recorded = [name for _, name, _ in DIAGNOSTICS if any(name in row for row in result["rows"])]
    if recorded:
        lines += [
            "",
            "Diagnostics, per update (per seed): " + ", ".join(f"`{name}`" for name in recorded) + ".",
            "",
            "| row | " + " | ".join(recorded) + " |",
            "|---|" + "---|" * len(recorded),
        ]
        for row in result["rows"]:
            cells = [", ".join(f"{v:.3g}" for v in row[name]) if name in row else "—" for name in recorded]
            lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    lines += ["", "![iteration means](tutorial_pendulum.png)"]
    text = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(text)
    return text


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """Every run's iteration means against environment steps, one colour per row, the tutorial's numbers beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    colors = plt.cm.tab10(np.arange(len(ROWS)))
    for color, (row, _, kwargs) in zip(colors, ROWS, strict=True):
        n_steps = int(kwargs.get("n_steps", 2048))
        members = [r for r in runs.values() if r["spec"]["labels"]["row"] == row]
        for i, run in enumerate(sorted(members, key=lambda r: r["spec"]["seed"])):
            means = iteration_means(run, n_steps)
            ax.plot(
                (np.arange(len(means)) + 1) * n_steps, means, color=color, lw=0.8, alpha=0.7, label=row if i == 0 else None
            )
    ax.axhspan(*TUTORIAL_LOGS_1M, color="grey", alpha=0.15, label="tutorial's logs at ~1M steps")
    ax.axhline(TUTORIAL_FINAL, color="black", ls="--", lw=1, label=f"tutorial's last iteration ({TUTORIAL_FINAL}, ~22M steps)")
    ax.set_xlabel(f"environment steps ({ENV_ID}, one line per seed)")
    ax.set_ylabel("mean training return of the iteration's episodes")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "tutorial_pendulum.png", dpi=110)
    plt.close(fig)


EXPERIMENT = runner.Experiment(
    "tutorial_pendulum", __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
