"""The PPO paper's surrogate-objective comparison (Schulman et al. 2017, Table 1), plus TRPOKL and REINFORCE.

Rows: no clipping or penalty; clipping eps = 0.1 / 0.2 / 0.3 (PPOClip); adaptive KL d_targ = 0.003 / 0.01 / 0.03
(PPOKL, beta_0 = 1); fixed KL beta = 0.3 / 1 / 3 / 10 (PPOKL); TRPOKL (target_kl = 0.01); REINFORCE (value baseline).

Settings (the paper's Table 3 and section 6.1): horizon 2048, Adam 3e-4, 10 epochs, minibatch 64, gamma 0.99,
lambda 0.95, 64x64 tanh MLP with separate policy and value networks (SB3's ActorCriticPolicy with
net_arch=dict(pi=[64, 64], vf=[64, 64]), orthogonal initialisation), no entropy bonus. Choices where the paper is
silent or SB3 differs, stated once:
- observations: running mean/std normalisation clipped to [-5, 5], rewards NOT normalised (the OpenAI baselines
  ppo1 code of the paper): ``VecNormalize(norm_obs=True, norm_reward=False, clip_obs=5)``;
- SB3's defaults elsewhere: advantages normalised per minibatch, vf_coef 0.5, max_grad_norm 0.5, one Adam
  optimiser over both networks (their parameters are disjoint);
- "no clipping or penalty" is PPOClip with clip_range = 1e6: min(r A, clip(r, 1 - 1e6, 1 + 1e6) A) = r A for
  every ratio r <= 1e6 + 1, i.e. exactly the unclipped surrogate L^CPI (PPOKL cannot express it exactly:
  beta > 0 is enforced, and beta = 1e-6 would still be a penalty);
- TRPOKL: sb3-contrib's TRPO defaults (CG 15 steps, damping 0.1, line search 10 steps, critic Adam 1e-3,
  10 critic updates of minibatch 128) with target_kl = 0.01, n_steps 2048, the same networks and normalisation;
- REINFORCE: the value baseline, n_steps 2048 (of finished episodes), Adam 1e-3 (its default), normalised
  advantages, the same networks and normalisation.

Protocol: the score of a run is the mean return of its last 100 training episodes; per environment it is
normalised so that a uniform-random policy scores 0 (its mean return over ``random_episodes`` episodes, measured
and stored as runs ``random-<env>``) and the best of the paper's 11 settings (highest mean score over seeds) scores
1. The extra rows (TRPOKL, REINFORCE) are normalised with the same constants (they can exceed 1). Aggregates are
rliable's interquartile mean (IQM) and mean over all (seed, environment) scores with 95% stratified bootstrap CIs.

A profile may run a subset of the rows (its ``rows``): then the completeness checks are over its rows, and "best" is
the best of the paper's rows present in the profile. The ``medium`` profile has 3 of the paper's 11 rows (no clipping,
clipping eps = 0.2, adaptive KL d_targ = 0.01) plus TRPOKL, so its normaliser differs from the paper's: its normalised
scores compare row to row within the profile, and the comparison to the paper's Table 1 is by the ordering of the rows
and by the raw scores. The ``medium`` and ``full`` profiles record the package's diagnostics once per update
(``runner.DIAGNOSTIC_KEYS``), and each reuses the other's finished runs: the medium runs are the full profile's seeds 0
and 1 of those four rows, with the same run ids and specs (``runner.reuse_records``).

    python -m benchmarks.surrogates --profile quick        # the committed results (see PROFILES)
    python -m benchmarks.surrogates --profile medium       # 7 tasks x 1M steps x 2 seeds, 4 rows, diagnostics (56 runs)
    python -m benchmarks.surrogates --profile full         # the paper's protocol: 7 tasks x 1M steps x 3 seeds (days here)
    python -m benchmarks.surrogates --smoke                # CI smoke test (seconds)
    python -m benchmarks.surrogates --profile quick --report-only   # the report from the stored results

Results go to ``benchmarks/results/surrogates/<profile>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import runner
from benchmarks.runner import (
    DIAGNOSTIC_KEYS,
    RANDOM,
    RunSpec,
    curve,
    final_score,
    interval_estimates,
    plot_performance_profiles,
)

PAPER_ENVS = [
    "HalfCheetah-v5",
    "Hopper-v5",
    "InvertedDoublePendulum-v5",
    "InvertedPendulum-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "Walker2d-v5",
]
#: the rows of the ``medium`` profile: the issue's comparison (clip 0.2 and adaptive KL 0.01 against no clipping) and TRPOKL
MEDIUM_ROWS = ["no clipping or penalty", "clipping, eps = 0.2", "adaptive KL, d_targ = 0.01", "TRPOKL (target_kl = 0.01)"]
PROFILES = {
    # the paper's protocol; the diagnostics recorded, the medium profile's finished runs reused
    "full": {
        "envs": PAPER_ENVS,
        "seeds": [0, 1, 2],
        "steps": 1_000_000,
        "random_episodes": 100,
        "overrides": {},
        "record_keys": list(DIAGNOSTIC_KEYS),
        "reuse": ["surrogates/medium"],
    },
    # the paper's protocol for 4 rows and 2 seeds: the same runs as the full profile's (either reuses the other's)
    "medium": {
        "envs": PAPER_ENVS,
        "seeds": [0, 1],
        "steps": 1_000_000,
        "random_episodes": 100,
        "overrides": {},
        "rows": MEDIUM_ROWS,
        "record_keys": list(DIAGNOSTIC_KEYS),
        "reuse": ["surrogates/full"],
    },
    # two tasks that PPO learns within the budget (the inverted pendulums) and one where 20 updates are early
    # training (Hopper); 78 runs of 40,960 steps (20 updates), 2 workers. Far from converged on Hopper (the paper:
    # 1M steps): there it is an early-training comparison. Measured wall time: see results.md.
    "quick": {
        "envs": ["InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Hopper-v5"],
        "seeds": [0, 1],
        "steps": 40_960,
        "random_episodes": 100,
        "overrides": {},
    },
    # CI: seconds; tiny rollouts so that every row runs at least one update
    "smoke": {
        "envs": ["InvertedPendulum-v5"],
        "seeds": [0],
        "steps": 128,
        "random_episodes": 3,
        "overrides": {"n_steps": 64, "batch_size": 32, "n_epochs": 1},
        "bootstrap_reps": 200,
    },
}
BOOTSTRAP_REPS = 2000  # rliable's bootstrap repetitions, where the profile does not say
PAPER_SETTINGS = {
    "n_steps": 2048,
    "batch_size": 64,
    "n_epochs": 10,
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "ent_coef": 0.0,
    "policy_kwargs": "dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh)",
}
NORMALIZE = {"norm_obs": True, "norm_reward": False, "clip_obs": 5.0}
# (row name, algorithm key, arguments on top of the paper's settings, paper's Table 1 average normalised score)
PAPER_ROWS = [
    ("no clipping or penalty", "ppo_clip", {"clip_range": 1e6}, -0.39),
    ("clipping, eps = 0.1", "ppo_clip", {"clip_range": 0.1}, 0.76),
    ("clipping, eps = 0.2", "ppo_clip", {"clip_range": 0.2}, 0.82),
    ("clipping, eps = 0.3", "ppo_clip", {"clip_range": 0.3}, 0.70),
    ("adaptive KL, d_targ = 0.003", "ppo_kl", {"kl_controller": "adaptive", "kl_target": 0.003, "kl_coef": 1.0}, 0.68),
    ("adaptive KL, d_targ = 0.01", "ppo_kl", {"kl_controller": "adaptive", "kl_target": 0.01, "kl_coef": 1.0}, 0.74),
    ("adaptive KL, d_targ = 0.03", "ppo_kl", {"kl_controller": "adaptive", "kl_target": 0.03, "kl_coef": 1.0}, 0.71),
    ("fixed KL, beta = 0.3", "ppo_kl", {"kl_controller": "fixed", "kl_coef": 0.3}, 0.62),
    ("fixed KL, beta = 1", "ppo_kl", {"kl_controller": "fixed", "kl_coef": 1.0}, 0.71),
    ("fixed KL, beta = 3", "ppo_kl", {"kl_controller": "fixed", "kl_coef": 3.0}, 0.72),
    ("fixed KL, beta = 10", "ppo_kl", {"kl_controller": "fixed", "kl_coef": 10.0}, 0.69),
]
EXTRA_ROWS = [
    ("TRPOKL (target_kl = 0.01)", "trpo_kl", {"target_kl": 0.01}, None),
    ("REINFORCE (value baseline)", "reinforce", {"baseline": "value", "normalize_advantage": True}, None),
]
ROWS = PAPER_ROWS + EXTRA_ROWS
# which of the paper's settings apply to each algorithm
ALGO_SETTINGS = {
    "ppo_clip": tuple(PAPER_SETTINGS),
    "ppo_kl": tuple(PAPER_SETTINGS),
    "trpo_kl": ("n_steps", "gamma", "gae_lambda", "policy_kwargs", "batch_size"),
    "reinforce": ("n_steps", "gamma", "policy_kwargs"),
}
TRPO_BATCH = 128  # sb3-contrib's default critic minibatch


def slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", text).strip("_")


def row_kwargs(algo: str, extra: dict, overrides: dict) -> dict:
    kwargs = {key: PAPER_SETTINGS[key] for key in ALGO_SETTINGS[algo]}
    if algo == "trpo_kl":
        kwargs["batch_size"] = TRPO_BATCH
    kwargs.update(extra)
    for key, value in overrides.items():
        if key in kwargs and (key != "n_epochs" or algo in ("ppo_clip", "ppo_kl")):
            kwargs[key] = value
    return kwargs


def profile_rows(profile: dict[str, Any]) -> list[tuple[str, str, dict, float | None]]:
    """:return: the rows of ``ROWS`` the profile runs (its ``rows``, in the order of ``ROWS``; all without it)"""
    names = profile.get("rows", [name for name, *_ in ROWS])
    unknown = set(names) - {name for name, *_ in ROWS}
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}: the rows are named in ROWS")
    rows = [row for row in ROWS if row[0] in names]
    if not any(row in PAPER_ROWS for row in rows):
        raise ValueError("a profile needs at least one of the paper's rows: the best of them normalises the scores")
    return rows


def make_specs(profile: dict) -> list[RunSpec]:
    specs = [
        RunSpec(f"random-{env_id}", RANDOM, env_id, seed=0, steps=profile["random_episodes"], labels={"row": "random"})
        for env_id in profile["envs"]
    ]
    # seed-major: an interrupted suite leaves complete seeds (every row, every environment) behind
    for seed in profile["seeds"]:
        for env_id in profile["envs"]:
            for name, algo, extra, _ in profile_rows(profile):
                specs.append(
                    RunSpec(
                        run_id=f"{slug(name)}-{env_id}-s{seed}",
                        algo=algo,
                        env_id=env_id,
                        seed=seed,
                        steps=profile["steps"],
                        kwargs=row_kwargs(algo, extra, profile["overrides"]),
                        normalize=dict(NORMALIZE),
                        record_keys=tuple(profile.get("record_keys", ())),
                        labels={"row": name},
                    )
                )
    return specs


def normalised_scores(
    raw: dict[str, dict[str, list[float]]], random_scores: dict[str, float], best: dict[str, float]
) -> dict[str, dict[str, np.ndarray]]:
    """:return: row -> env -> (score - random) / (best - random), one per seed of the env"""
    return {
        name: {
            env: (np.array(values) - random_scores[env]) / (best[env] - random_scores[env]) for env, values in by_env.items()
        }
        for name, by_env in raw.items()
    }


def score_matrices(
    normalised: dict[str, dict[str, np.ndarray]], env_seeds: dict[str, list[int]], seeds: list[int]
) -> dict[str, np.ndarray]:
    """:return: row -> normalised scores (seeds common to every env x envs), what rliable aggregates"""
    envs = [env for env in env_seeds if env_seeds[env]]
    return {
        name: np.array([[by_env[env][env_seeds[env].index(s)] for env in envs] for s in seeds])
        for name, by_env in normalised.items()
    }


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: normalised scores, their rliable estimates, the acceptance checks"""
    reps = profile.get("bootstrap_reps", BOOTSTRAP_REPS)
    rows_run = [name for name, *_ in profile_rows(profile)]
    envs = [env for env in profile["envs"] if f"random-{env}" in runs]
    random_scores = {env: float(np.mean([e[1] for e in runs[f"random-{env}"]["episodes"]])) for env in envs}
    scored: dict[tuple[str, str, int], float] = {}
    for run in runs.values():
        spec = run["spec"]
        if spec["labels"]["row"] != "random" and spec["env_id"] in envs:
            scored[(spec["labels"]["row"], spec["env_id"], spec["seed"])] = final_score(run)
    # per env, the seeds whose runs (every row) are all present: an interrupted suite reports on what is complete
    env_seeds = {env: [s for s in profile["seeds"] if all((name, env, s) in scored for name in rows_run)] for env in envs}
    envs = [env for env in envs if env_seeds[env]]
    seeds = [s for s in profile["seeds"] if envs and all(s in env_seeds[env] for env in envs)]  # common to every env
    raw = {name: {env: [scored[(name, env, s)] for s in env_seeds[env]] for env in envs} for name in rows_run}
    paper_names = [name for name, *_ in PAPER_ROWS if name in rows_run]
    best = {env: max(float(np.mean(raw[name][env])) for name in paper_names) for env in envs}
    best_row = {env: max(paper_names, key=lambda n, e=env: float(np.mean(raw[n][e]))) for env in envs}
    normalised = normalised_scores(raw, random_scores, best) if envs else {}
    scores = score_matrices(normalised, env_seeds, seeds)  # aggregate over (common seed, env): runs x tasks
    names = list(normalised)
    estimates = interval_estimates(scores, reps=reps) if seeds else {}
    per_env = {
        env: interval_estimates({name: normalised[name][env][:, None] for name in names}, reps=reps)
        for env in envs
        if len(env_seeds[env]) >= 2
    }
    paper = {name: value for name, _, _, value in ROWS}
    rows = []
    for name in names:
        rows.append(
            {
                "row": name,
                **estimates.get(name, {}),
                "per_env_normalised_mean": {env: float(normalised[name][env].mean()) for env in envs},
                "per_env_mean_ci": {env: per_env[env][name]["mean_ci"] for env in per_env},
                "per_env_raw_scores": raw[name],
                "paper_table1": paper[name],
            }
        )
    checks = {}
    # the acceptance: clipping 0.2 and adaptive KL 0.01 above no clipping (the rows the profile has)
    targets = [name for name in ("clipping, eps = 0.2", "adaptive KL, d_targ = 0.01") if name in rows_run]
    if "no clipping or penalty" not in rows_run:
        targets = []
    if len(seeds) >= 2:
        for name in targets:
            base = estimates["no clipping or penalty"]
            checks[f"{name} (aggregate)"] = {
                "iqm_ci_above_no_clipping": estimates[name]["iqm_ci"][0] > base["iqm_ci"][1],
                "mean_ci_above_no_clipping": estimates[name]["mean_ci"][0] > base["mean_ci"][1],
            }
    for env, table in per_env.items():
        for name in targets:
            checks[f"{name} ({env})"] = {
                "mean_ci_above_no_clipping": table[name]["mean_ci"][0] > table["no clipping or penalty"]["mean_ci"][1]
            }
    return {
        "profile": dict(profile),
        "seeds_used": seeds,
        "seeds_per_env": env_seeds,
        "score": "mean return of the last 100 training episodes; normalised (score - random) / (best - random)",
        "random_scores": random_scores,
        "random_how": f"uniform-random actions (action_space.sample(), seed 0), {profile['random_episodes']} episodes per env",
        "best_scores": best,
        "best_rows": best_row,
        "best_how": "highest mean score over seeds among the paper's 11 settings, per env"
        if len(paper_names) == len(PAPER_ROWS)
        else f"highest mean score over seeds among the paper's settings in this profile ({len(paper_names)} of "
        f"{len(PAPER_ROWS)}: {', '.join(paper_names)}), per env",
        "bootstrap_reps": reps,
        "compute_seconds": round(sum(float(run.get("wall_time_s", 0.0)) for run in runs.values()), 1),
        "rows": rows,
        "checks": checks,
        **(
            {
                "diagnostics": diagnostics(runs, rows_run, env_seeds),
                "diagnostics_nan": diagnostics(runs, rows_run, env_seeds, nan_fraction),
            }
            if profile.get("record_keys")
            else {}
        ),
    }


def diagnostics(
    runs: dict[str, dict], names: list[str], env_seeds: dict[str, list[int]], statistic: Callable | None = None
) -> dict[str, Any]:
    """:return: key -> row -> env -> per complete seed, a statistic of the run's values per update of the recorded
    diagnostic: by default the median of its values but NaN (NaN where the algorithm does not log the key, or logged
    only NaN)"""
    statistic = statistic or _median_value
    by_cell = {(run["spec"]["labels"]["row"], run["spec"]["env_id"], run["spec"]["seed"]): run for run in runs.values()}
    keys = sorted({key for run in by_cell.values() for key in run.get("records", {})}, key=_key_order)
    table: dict[str, Any] = {}
    for key in keys:
        table[key] = {
            name: {
                env: [statistic(runner.recorded(by_cell[(name, env, s)], key)[:, 1]) for s in seeds]
                for env, seeds in env_seeds.items()
            }
            for name in names
        }
    return table


def _key_order(key: str) -> tuple[int, str]:
    return (DIAGNOSTIC_KEYS.index(key), key) if key in DIAGNOSTIC_KEYS else (len(DIAGNOSTIC_KEYS), key)


def _median_value(values: np.ndarray) -> float:
    """:return: the median of a run's values per update but NaN (+-inf kept: e.g. ratio_max where a ratio overflowed)"""
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


def nan_fraction(values: np.ndarray) -> float:
    """:return: the fraction of a run's values per update that are NaN (e.g. ``ess`` before it handled ratios that left
    float32's range), NaN if nothing was logged"""
    return float(np.mean(np.isnan(values))) if len(values) else float("nan")


def reported_envs(result: dict[str, Any]) -> list[str]:
    """:return: the environments with at least one complete seed"""
    return [env for env, seeds in result["seeds_per_env"].items() if seeds]


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its tables"""
    text = markdown(result, reported_envs(result), out_dir)
    (out_dir / "results.md").write_text(text + "\n\n![curves](curves.png)\n")
    return text


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """The learning curves and rliable's performance profiles."""
    envs = reported_envs(result)
    if not envs:
        return
    plot_curves(runs, envs, result["profile"], out_dir / "curves.png")
    if result["seeds_used"]:
        raw = {row["row"]: row["per_env_raw_scores"] for row in result["rows"]}
        normalised = normalised_scores(raw, result["random_scores"], result["best_scores"])
        scores = score_matrices(normalised, result["seeds_per_env"], result["seeds_used"])
        plot_performance_profiles(scores, out_dir / "performance_profiles.png", reps=min(result["bootstrap_reps"], 1000))


def _ci(low_high: list[float]) -> str:
    return f"[{low_high[0]:.2f}, {low_high[1]:.2f}]"


def markdown(result: dict, envs: list[str], out_dir: Path) -> str:
    manifest = out_dir / "manifest.json"
    command = json.loads(manifest.read_text())["command"] if manifest.exists() else "?"
    profile = result["profile"]
    seeds_per_env = "; ".join(f"{env}: {result['seeds_per_env'][env]}" for env in envs)
    paper_rows = [row for row in result["rows"] if row["paper_table1"] is not None]
    subset = len(paper_rows) < len(PAPER_ROWS)  # the normaliser is then not the paper's
    best = "best of the paper's 11 settings"
    if subset:
        best = f"the best of the paper's settings in this profile ({len(paper_rows)} of {len(PAPER_ROWS)})"
    lines = [
        f"Command: `{command}`  ",
        f"{profile['steps']} steps per run; seeds per environment: {seeds_per_env} (profile: {profile['seeds']}).  ",
        f"Compute: {result['compute_seconds'] / 60:.0f} worker-minutes in total (the sum of the runs' wall times; "
        "the runner uses one worker per core).  ",
        "Score: mean return of the last 100 training episodes, normalised per env: random policy = 0, "
        f"{best} = 1. Aggregate IQM and mean over (seed, env) with 95% stratified bootstrap CIs "
        f"(rliable, {result['bootstrap_reps']} reps) over the seeds common to all environments ({result['seeds_used']}); "
        "per environment: mean over its seeds [95% bootstrap CI over seeds, when >= 2 seeds].",
        *_subset_note(paper_rows, subset),
        "",
        "| row | IQM [95% CI] | mean [95% CI] | " + " | ".join(envs) + " | paper (Table 1) |",
        "|---|---|---|" + "---|" * len(envs) + "---|",
    ]
    for row in result["rows"]:
        cells = []
        for env in envs:
            ci = row["per_env_mean_ci"].get(env)
            cells.append(f"{row['per_env_normalised_mean'][env]:.2f}" + (f" {_ci(ci)}" if ci else ""))
        paper = "" if row["paper_table1"] is None else f"{row['paper_table1']:.2f}"
        iqm = f"{row['iqm']:.2f} {_ci(row['iqm_ci'])}" if "iqm" in row else "n/a"
        mean = f"{row['mean']:.2f} {_ci(row['mean_ci'])}" if "mean" in row else "n/a"
        lines.append(f"| {row['row']} | {iqm} | {mean} | {' | '.join(cells)} | {paper} |")
    lines += ["", "Raw scores (mean ± std over seeds of the mean return of the last 100 episodes):", ""]
    lines += ["| row | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs)]
    for row in result["rows"]:
        cells = " | ".join(
            f"{np.mean(row['per_env_raw_scores'][env]):.1f} ± {np.std(row['per_env_raw_scores'][env]):.1f}" for env in envs
        )
        lines.append(f"| {row['row']} | {cells} |")
    lines += ["", "Normalisation constants:", ""]
    for env in envs:
        best = result["best_scores"].get(env, float("nan"))
        lines.append(
            f"- {env}: random = {result['random_scores'][env]:.2f} ({result['random_how']}); "
            f"best = {best:.2f} ({result['best_rows'].get(env, '?')})"
        )
    lines += ["", "Acceptance check (lower CI bound above the upper CI bound of 'no clipping or penalty'):", ""]
    if not result["checks"]:
        lines.append("- not computable: fewer than 2 seeds")
    for name, check in result["checks"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k.split('_')[0]} {v}" for k, v in check.items()))
    if "diagnostics" in result:
        lines += diagnostics_markdown(result["diagnostics"], envs, result.get("diagnostics_nan", {}))
    return "\n".join(lines)


def _subset_note(paper_rows: list[dict], subset: bool) -> list[str]:
    """:return: for a profile with some of the paper's rows, what its normalised scores compare, and the orderings"""
    if not subset:
        return []

    def order(values: dict[str, float]) -> str:
        return " > ".join(sorted(values, key=values.__getitem__, reverse=True))

    here = {row["row"]: row["mean"] for row in paper_rows if "mean" in row}
    return [
        "",
        f"With {len(paper_rows)} of the paper's {len(PAPER_ROWS)} rows the normaliser (the best of them per env) differs "
        "from the paper's (the best of its 11): the normalised scores compare row to row within this profile, and "
        "the comparison to the paper's Table 1 is by the ordering of the rows and by the raw scores (table below; the "
        "paper shows them as learning curves, its Figure 3).",
        "",
        f"Ordering of the paper's rows by aggregate mean normalised score: here {order(here) if here else 'n/a'}; "
        f"paper (Table 1) {order({row['row']: row['paper_table1'] for row in paper_rows})}.",
    ]


def diagnostics_markdown(table: dict[str, Any], envs: list[str], nan_table: dict[str, Any] | None = None) -> list[str]:
    """:return: per recorded diagnostic, a table row x env of the median over seeds of each run's median per update
    (with the largest fraction of NaN updates over the seeds, where a run logged NaN)"""
    lines = [
        "",
        "Diagnostics (docs/diagnostics.md), recorded once per update: per cell the median over seeds of each run's "
        "median over its values but NaN ('-': not logged by that algorithm; '(NaN on x %)': the largest fraction of "
        "updates over the seeds that logged NaN, left out of the median). Where a check above fails, these (policy_kl: "
        "the step actually taken; ratio_max, ess: how far off-policy the epochs went; std: the exploration left) and "
        "the raw scores are the data that explain it.",
    ]
    for key, by_row in table.items():
        lines += ["", f"`{key}`:", "", "| row | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs)]
        for name, by_env in by_row.items():
            cells = []
            for env in envs:
                values = [v for v in by_env.get(env, []) if not np.isnan(v)]
                fractions = [f for f in (nan_table or {}).get(key, {}).get(name, {}).get(env, []) if np.isfinite(f)]
                cell = f"{np.median(values):.3g}" if values else "-"
                worst = max(fractions, default=0.0)
                cells.append(cell + (f" (NaN on {worst:.0%})" if worst >= 0.01 else " (NaN on <1%)" if worst > 0 else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot_curves(runs: dict, envs: list[str], profile: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0, profile["steps"], 60)[1:]
    cmap = plt.cm.tab20(np.linspace(0, 1, len(ROWS)))
    # at most four panels a row (the paper's Figure 3 is a grid); a spare panel holds the legend
    columns = min(len(envs), 4)
    rows = -(-len(envs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.0 * columns, 3.9 * rows), squeeze=False)
    panels = list(axes.flat)
    for ax, env in zip(panels, envs, strict=False):
        for color, (name, *_) in zip(cmap, ROWS, strict=True):
            members = [r for r in runs.values() if r["spec"]["env_id"] == env and r["spec"]["labels"]["row"] == name]
            if not members:
                continue
            curves = np.array([curve(r, grid) for r in members])
            style = "-" if name.startswith(("clipping", "no clip")) else "--" if "KL" in name else ":"
            ax.plot(grid, np.nanmean(curves, axis=0), style, color=color, label=name, lw=1.4)
            if len(members) > 1:  # the seeds' range
                ax.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0), color=color, alpha=0.12, lw=0)
        ax.axhline(np.mean([e[1] for e in runs[f"random-{env}"]["episodes"]]), color="grey", lw=0.8, label="random policy")
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (last 10 episodes; seeds: mean, range)", fontsize=8)
    legend = {}  # every row that ran on any environment, once
    for ax in panels[: len(envs)]:
        legend.update({label: handle for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)})
    for ax in panels[len(envs) :]:
        ax.axis("off")
    if len(panels) > len(envs):
        panels[len(envs)].legend(legend.values(), legend.keys(), fontsize=8, loc="center")
    else:
        panels[len(envs) - 1].legend(legend.values(), legend.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


EXPERIMENT = runner.Experiment("surrogates", __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
