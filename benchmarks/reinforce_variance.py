"""Variance and bias of the REINFORCE gradient estimators: {full return, reward-to-go} x {none, mean, value, optimal,
rloo, rloo_std, time}, and the bias that carried-over episodes add, for each ``off_policy_correction``.

At fixed policy snapshots (the initial policy and one part-trained by REINFORCE) of CartPole-v1 and Pendulum-v1,
many independent batches of complete episodes are sampled; on each batch the eight estimators of the policy
gradient are computed *on the same episodes* (common random numbers: the comparison between estimators is
paired), with the package's own code (``sb3_ppo_variants.reinforce.baselines``):

    ghat = (1/N) sum_i sum_t grad log pi(a_t|s_t) (target_t - b)      target = R(tau) or G_t

Reported per estimator: the variance of ghat (trace of its covariance over the batches) with a 95% bootstrap
confidence interval (batches resampled), paired variance ratios with bootstrap CIs, and the bias: the distance of
the mean of ghat over the batches from a reference gradient estimated on *independent* reference batches (the
mean over the eight estimators), compared with the distance that sampling noise alone produces.

Choices (documented in the JSON output too):
- gamma = 1 by default: only then do the full-return and reward-to-go estimators have the same expectation
  (with gamma < 1, reward-to-go drops the gamma^t factor, as every implementation does, and the two estimate
  different vectors; each return mode is then compared with its own reference).
- A time-limit truncation is the end of the episode for every estimator (the finite-horizon gradient): the
  algorithm's bootstrap with V(s_T) under baseline="value" changes the target, it is not a baseline.
- The value baselines (one regressed on G_t, one on R(tau)) are fresh MLPs fitted on separate independent
  episodes before the experiment, so V never sees the batch it is evaluated on.
- "mean", "optimal", "rloo" and "time" are the algorithm's leave-one-episode-out batch estimates. "rloo_std"
  estimates E[1/std] times the gradient: its rows are rescaled by 1 / (mean of 1/std over the snapshot's batches) so
  that variance and bias compare with the others (the reference excludes it).

Carry-over (``analyse_carry_over``, CartPole-v1, where episode lengths vary): REINFORCE is trained with the
shipped CartPole settings (8 environments, n_steps = 4000) until its episodes are long, keeping its last three
policies pi_-2, pi_-1, pi_0. The algorithm's own episode buffer then collects batches as training does, cycling the
three policies phase by phase (each phase one batch's worth of finished transitions), so that the batch collected by
pi_0 holds episodes whose first steps were sampled by pi_-1 and pi_-2. On each such batch the reward-to-go estimator
with the "mean" baseline is formed as ``off_policy_correction="none"`` forms it (steps as sampled) and as
``"importance"`` forms it (per-decision weights from the stored behaviour log-probabilities); ``"sync"`` batches are
collected by pi_0 with the algorithm's synchronous rule (unfinished episodes run to their end, other steps dropped).
Each option's bias is measured against the on-policy reference: the same estimator on independent episodes of pi_0.

Each environment is one run of the benchmark runner (``analyse_snapshots``: train the snapshot, then both snapshots'
statistics), so the two environments run in parallel.

    python -m benchmarks.reinforce_variance                  # the committed results (profile full)
    python -m benchmarks.reinforce_variance --smoke          # CI smoke test, well under a minute
    python -m benchmarks.reinforce_variance --report-only    # the CSV, figure and table from the stored results

Results go to ``benchmarks/results/reinforce_variance/`` (profile full) or a new temporary folder (``--smoke``);
``--output`` elsewhere.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor
from tqdm import tqdm

from benchmarks import runner
from benchmarks.common import RESULTS
from benchmarks.runner import RunSpec, make_env, make_model
from sb3_ppo_variants.reinforce.baselines import (
    OptimalBaseline,
    PolicyGradientBatch,
    actor_parameters,
    discounted_returns,
    leave_one_out_episode_mean,
    leave_one_out_mean,
    leave_one_out_time_mean,
    make_baseline,
    optimal_baseline,
    per_episode_gradients,
)
from sb3_ppo_variants.reinforce.episodes import Episode, EpisodeBatch

RETURNS = ("full", "rtg")  # whole-episode return R(tau), reward-to-go G_t
BASELINE_NAMES = ("none", "mean", "value", "optimal", "rloo", "rloo_std", "time")
ESTIMATORS = [(r, b) for r in RETURNS for b in BASELINE_NAMES]
# the unbiased estimators whose mean is the reference gradient ("rloo_std" estimates a multiple of it)
REFERENCE_ESTIMATORS = [e for e, key in enumerate(ESTIMATORS) if key[1] != "rloo_std"]
CORRECTIONS = ("none", "importance", "sync")
# Diagnostic extra (not an option of the algorithm): the optimal constant b_k estimated once on the separate
# value-fit episodes instead of leave-one-out inside each batch, to separate the theory from estimation noise
EXTRA_BASELINES = ("optimal*",)
ALL_ESTIMATORS = ESTIMATORS + [(r, b) for r in RETURNS for b in EXTRA_BASELINES]

# How the part-trained snapshots are made: REINFORCE with the value baseline, close to its zoo file (reinforce.yml)
ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        n_envs=8,
        kwargs=dict(n_steps=4000, learning_rate=3e-3, baseline="value", normalize_advantage=True),
    ),
    "Pendulum-v1": dict(
        n_envs=8,
        kwargs=dict(
            n_steps=2000, learning_rate=3e-3, gamma=0.95, baseline="value", normalize_advantage=True, value_batch_size=256
        ),
    ),
}


@dataclass
class Settings:
    batches: int = 200
    reference_batches: int = 200
    value_batches: int = 30
    episodes_per_batch: int = 10
    gamma: float = 1.0
    bootstrap: int = 2000
    seed: int = 0
    quick: bool = False
    # carry-over: training steps of the CartPole snapshot, batches per option, reference batches of 10 episodes
    carry_train_steps: int = 150_000
    carry_batches: int = 100
    carry_reference_batches: int = 200


# profile -> the Settings and the training steps of the part-trained snapshot of each environment
PROFILES: dict[str, dict[str, Any]] = {
    "full": {**asdict(Settings()), "train_steps": {"CartPole-v1": 40_000, "Pendulum-v1": 100_000}},
    "smoke": {
        **asdict(
            Settings(
                batches=20,
                reference_batches=10,
                value_batches=3,
                episodes_per_batch=4,
                bootstrap=200,
                quick=True,
                carry_train_steps=8_000,
                carry_batches=2,
                carry_reference_batches=3,
            )
        ),
        "train_steps": {"CartPole-v1": 8_000, "Pendulum-v1": 8_000},
    },
}


# ----- sampling ------------------------------------------------------------------------------------------


def sample_episodes(policy, env_id: str, n_episodes: int, seed: int, progress: tqdm, n_envs: int = 32) -> list[Episode]:
    """
    ``n_episodes`` independent complete episodes of a fixed policy. Each environment contributes its *first* k
    episodes (a fixed number, whatever their lengths), so short episodes are not over-represented.
    """
    n_envs = min(n_envs, n_episodes)
    per_env_quota = math.ceil(n_episodes / n_envs)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    action_space = env.action_space
    finished: list[list[Episode]] = [[] for _ in range(n_envs)]
    current: list[dict[str, list]] = [dict(obs=[], actions=[], rewards=[]) for _ in range(n_envs)]
    obs = env.reset()
    policy.set_training_mode(False)
    while min(len(episodes) for episodes in finished) < per_env_quota:
        with th.no_grad():
            actions = policy.get_distribution(obs_as_tensor(obs, policy.device)).get_actions().cpu().numpy()
        clipped = (
            np.clip(actions, action_space.low, action_space.high) if isinstance(action_space, gym.spaces.Box) else actions
        )
        new_obs, rewards, dones, _ = env.step(clipped)
        for i in range(n_envs):
            current[i]["obs"].append(np.array(obs[i]))
            current[i]["actions"].append(np.array(actions[i]))
            current[i]["rewards"].append(float(rewards[i]))
            if dones[i]:
                if len(finished[i]) < per_env_quota:
                    finished[i].append(
                        Episode(
                            np.stack(current[i]["obs"]),
                            np.stack(current[i]["actions"]),
                            np.asarray(current[i]["rewards"], dtype=np.float64),
                        )
                    )
                    progress.update(1)
                current[i] = dict(obs=[], actions=[], rewards=[])
        obs = new_obs
    env.close()
    # a fixed set of indices (env-major), independent of the episode lengths
    return [episode for episodes in finished for episode in episodes][:n_episodes]


# ----- value baselines --------------------------------------------------------------------------------------


class ValueFunction(th.nn.Module):
    """A small MLP V(s) regressed on standardised Monte-Carlo targets."""

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.net = th.nn.Sequential(
            th.nn.Linear(obs_dim, 64), th.nn.Tanh(), th.nn.Linear(64, 64), th.nn.Tanh(), th.nn.Linear(64, 1)
        )
        self.register_buffer("loc", th.zeros(()))
        self.register_buffer("scale", th.ones(()))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.loc + self.scale * self.net(obs.float()).squeeze(-1)

    def fit(self, obs: th.Tensor, targets: th.Tensor, steps: int, seed: int) -> None:
        generator = th.Generator().manual_seed(seed)
        self.loc.fill_(targets.mean())
        self.scale.fill_(targets.std().clamp_min(1e-6))
        optimizer = th.optim.Adam(self.net.parameters(), lr=1e-3)
        normalised = (targets - self.loc) / self.scale
        for _ in range(steps):
            idx = th.randint(0, len(obs), (256,), generator=generator)
            loss = th.nn.functional.mse_loss(self.net(obs[idx].float()).squeeze(-1), normalised[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def episode_targets(episodes: list[Episode], gamma: float, reward_to_go: bool) -> np.ndarray:
    return np.concatenate([discounted_returns(ep.rewards, gamma, reward_to_go) for ep in episodes])


def fit_value_functions(episodes: list[Episode], gamma: float, steps: int, seed: int) -> dict[str, ValueFunction]:
    obs = th.as_tensor(np.concatenate([ep.observations for ep in episodes]))
    values = {}
    for mode in RETURNS:
        value = ValueFunction(obs.shape[1])
        value.fit(obs, th.as_tensor(episode_targets(episodes, gamma, mode == "rtg"), dtype=th.float32), steps, seed)
        values[mode] = value.eval()
    return values


# ----- the eight estimators on one batch ------------------------------------------------------------------------


def episode_gradients(policy, episodes: list[Episode], gamma: float, values: dict[str, ValueFunction] | None) -> dict:
    """
    Per-episode sums of the step scores s_t = grad log pi(a_t|s_t): g = sum s_t, h_rtg = sum s_t G_t and, with
    value functions, sum s_t V(s_t) for both of them (float64 tensors of shape (N, P)); and the targets.
    """
    batch = EpisodeBatch.from_episodes(episodes, policy.device, isinstance(policy.action_space, gym.spaces.Discrete))
    rtg = episode_targets(episodes, gamma, True)
    full = episode_targets(episodes, gamma, False)
    time_rtg = leave_one_out_time_mean(rtg, batch.starts)
    time_full = leave_one_out_time_mean(full, batch.starts)
    weights = [th.ones(batch.n_steps), th.as_tensor(rtg, dtype=th.float32)]
    if values is not None:
        weights += [th.as_tensor(time_rtg, dtype=th.float32), th.as_tensor(time_full, dtype=th.float32)]
    v_rtg = v_full = None
    if values is not None:
        with th.no_grad():
            v_rtg = values["rtg"](batch.observations)
            v_full = values["full"](batch.observations)
        weights += [v_rtg, v_full]
    rows = per_episode_gradients(lambda o, a: policy.get_distribution(o).log_prob(a), actor_parameters(policy), batch, weights)
    rows = [x.double() for x in rows]
    starts = batch.starts[:-1]
    out = dict(batch=batch, rtg=rtg, full=full, g=rows[0], h_rtg=rows[1], returns=th.as_tensor(full[starts])[:, None])
    if values is not None:
        out.update(s_time_rtg=rows[2], s_time_full=rows[3], s_v_rtg=rows[4], s_v_full=rows[5])
        out.update(v_rtg=v_rtg.double().numpy(), v_full=v_full.double().numpy())
    return out


def fixed_optimal_baselines(policy, episodes: list[Episode], gamma: float) -> dict[str, th.Tensor]:
    """b_k = sum_j g_jk h_jk / sum_j g_jk^2 on separate episodes, for both return modes (the "optimal*" rows)."""
    grads = episode_gradients(policy, episodes, gamma, None)
    g = grads["g"]
    return {
        "rtg": optimal_baseline(g, grads["h_rtg"], leave_one_out=False),
        "full": optimal_baseline(g, g * grads["returns"], leave_one_out=False),
    }


def batch_estimates(
    policy, episodes: list[Episode], gamma: float, values: dict[str, ValueFunction], fixed_optimal: dict[str, th.Tensor]
) -> tuple[np.ndarray, dict]:
    """
    :return: the batch gradient estimates (len(ALL_ESTIMATORS), P) in ``ALL_ESTIMATORS`` order (``rloo_std`` not
        rescaled), and per-step quantities for diagnostics (``inverse_std``: the mean over episodes of 1 / std, the
        scale of ``rloo_std``)
    """
    grads = episode_gradients(policy, episodes, gamma, values)
    batch, rtg, full = grads["batch"], grads["rtg"], grads["full"]
    g, h_rtg, s_v_rtg, s_v_full = grads["g"], grads["h_rtg"], grads["s_v_rtg"], grads["s_v_full"]
    starts = batch.starts[:-1]
    h_full = g * grads["returns"]  # R(tau_i) sum_t s_t
    mean_full = th.as_tensor(leave_one_out_mean(full, batch.starts)[starts])[:, None]
    mean_rtg = th.as_tensor(leave_one_out_mean(rtg, batch.starts)[starts])[:, None]
    optimal = OptimalBaseline()
    rloo, inverse_std = {}, {}
    for mode, targets in (("full", full), ("rtg", rtg)):
        mean, std = leave_one_out_episode_mean(targets, batch.starts)
        # the algorithm's rule: a group without spread leaves the advantages unscaled
        scale = 1.0 / np.where(std > 1e-8, std, 1.0)
        rloo[mode] = (th.as_tensor(mean)[:, None], th.as_tensor(scale)[:, None])
        inverse_std[mode] = float(scale.mean())
    h = {"full": h_full, "rtg": h_rtg}
    per_episode = {
        ("full", "none"): h_full,
        ("full", "mean"): h_full - mean_full * g,
        ("full", "value"): h_full - s_v_full,
        ("full", "optimal"): optimal.estimate(g, h_full),
        ("rtg", "none"): h_rtg,
        ("rtg", "mean"): h_rtg - mean_rtg * g,
        ("rtg", "value"): h_rtg - s_v_rtg,
        ("rtg", "optimal"): optimal.estimate(g, h_rtg),
        **{(mode, "rloo"): h[mode] - rloo[mode][0] * g for mode in RETURNS},
        **{(mode, "rloo_std"): (h[mode] - rloo[mode][0] * g) * rloo[mode][1] for mode in RETURNS},
        ("full", "time"): h_full - grads["s_time_full"],
        ("rtg", "time"): h_rtg - grads["s_time_rtg"],
        ("full", "optimal*"): h_full - fixed_optimal["full"] * g,
        ("rtg", "optimal*"): h_rtg - fixed_optimal["rtg"] * g,
    }
    estimates = th.stack([per_episode[key].mean(dim=0) for key in ALL_ESTIMATORS]).numpy()
    extra = dict(
        rtg=rtg,
        full=full,
        v_rtg=grads["v_rtg"],
        v_full=grads["v_full"],
        lengths=np.diff(batch.starts),
        inverse_std=inverse_std,
    )
    return estimates, extra


# ----- statistics ---------------------------------------------------------------------------------------------------


def gram(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    return centred @ centred.T


def bootstrap_traces(grams: list[np.ndarray], n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """
    Trace of the sample covariance of each estimator under the same bootstrap resamples of the batches.

    :param grams: centred Gram matrix X X^T (B x B) of each estimator
    :return: array (n_resamples, n_estimators)
    """
    n = grams[0].shape[0]
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)  # (R, B)
    out = np.empty((n_resamples, len(grams)))
    for e, k in enumerate(grams):
        # sum_j c_j K_jj - (1/n) c^T K c, over (n - 1): the resample's unbiased trace of covariance
        quad = np.einsum("rb,bc,rc->r", counts, k, counts)
        out[:, e] = (counts @ np.diag(k) - quad / n) / (n - 1)
    return out


def bias_statistics(
    samples: np.ndarray, reference: np.ndarray, counts: np.ndarray, ref_counts: np.ndarray
) -> dict[str, float]:
    """
    Bias of the mean of ``samples`` (B x P) against the mean of independent ``reference`` samples (R x P).

    U = ||d||^2 - tr(S)/B - tr(S_ref)/R, d = difference of the means, is an unbiased estimate of ||bias||^2
    (the subtracted terms are what sampling noise alone adds to ||d||^2). Its null distribution comes from a
    bootstrap under "no bias": both sets are centred on their own mean, then batches and reference batches are
    resampled with the multiplicities ``counts`` / ``ref_counts`` (resampling the uncentred data would add the
    observed d to the bootstrap world and inflate the spread). z = U / sd(U*), p = P*(U* >= U).
    Computed from Gram matrices, so each resample costs O(B^2), not O(B P).
    """
    b, r = len(samples), len(reference)
    xc, rc = samples - samples.mean(axis=0), reference - reference.mean(axis=0)
    k_xx, k_yy, k_xy = xc @ xc.T, rc @ rc.T, xc @ rc.T

    def u_statistic(c: np.ndarray, c_ref: np.ndarray) -> np.ndarray:
        # c: (n, B), c_ref: (n, R) multiplicities; every term is a quadratic form in them
        mean_sq = np.einsum("nb,bc,nc->n", c, k_xx, c) / b**2
        ref_sq = np.einsum("nr,rs,ns->n", c_ref, k_yy, c_ref) / r**2
        cross = np.einsum("nb,br,nr->n", c, k_xy, c_ref) / (b * r)
        tr_s = (c @ np.diag(k_xx) - mean_sq * b) / (b - 1)
        tr_r = (c_ref @ np.diag(k_yy) - ref_sq * r) / (r - 1)
        return mean_sq + ref_sq - 2 * cross - tr_s / b - tr_r / r

    d = samples.mean(axis=0) - reference.mean(axis=0)
    tr_s, tr_r = float(np.trace(k_xx)) / (b - 1), float(np.trace(k_yy)) / (r - 1)
    u = float(d @ d) - tr_s / b - tr_r / r
    null = u_statistic(counts, ref_counts)
    se = float(np.std(null, ddof=1))
    noise_only = math.sqrt(tr_s / b + tr_r / r)
    ref_norm = float(np.linalg.norm(reference.mean(axis=0)))
    return {
        "bias_distance": float(np.linalg.norm(d)),
        "bias_distance_noise_only": noise_only,
        "bias_sq_estimate": u,
        "bias_sq_se": se,
        "bias_z": u / se if se > 0 else float("nan"),
        "bias_p": float(np.mean(null >= u)),
        "bias_relative": float(np.linalg.norm(d)) / ref_norm if ref_norm > 0 else float("nan"),
        "reference_norm": ref_norm,
    }


def snapshot_statistics(estimates: np.ndarray, references: dict[str, np.ndarray], settings: Settings, rng) -> dict[str, Any]:
    """
    :param estimates: (B, 10, P) batch estimates in ``ALL_ESTIMATORS`` order
    :param references: reference batch estimates per return mode ("full", "rtg"), each (R, P)
    """
    grams = [gram(estimates[:, e]) for e in range(len(ALL_ESTIMATORS))]
    traces = np.array([np.trace(k) / (len(k) - 1) for k in grams])
    boot = bootstrap_traces(grams, settings.bootstrap, rng)
    n_batches, n_ref = estimates.shape[0], len(references["rtg"])
    counts = rng.multinomial(n_batches, np.full(n_batches, 1.0 / n_batches), size=settings.bootstrap).astype(np.float64)
    ref_counts = rng.multinomial(n_ref, np.full(n_ref, 1.0 / n_ref), size=settings.bootstrap).astype(np.float64)
    rows = []
    for e, (mode, baseline) in enumerate(ALL_ESTIMATORS):
        row = {
            "returns": mode,
            "baseline": baseline,
            "variance": float(traces[e]),
            "variance_ci_low": float(np.percentile(boot[:, e], 2.5)),
            "variance_ci_high": float(np.percentile(boot[:, e], 97.5)),
        }
        row.update(bias_statistics(estimates[:, e], references[mode], counts, ref_counts))
        rows.append(row)

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
        ia, ib = ALL_ESTIMATORS.index(a), ALL_ESTIMATORS.index(b)
        values = boot[:, ia] / boot[:, ib]
        low, high = np.percentile(values, [2.5, 97.5])
        return {
            "ratio": float(traces[ia] / traces[ib]),
            "ci_low": float(low),
            "ci_high": float(high),
            # the criterion: the two individual 95% CIs do not overlap
            "cis_disjoint": bool(
                rows[ia]["variance_ci_low"] > rows[ib]["variance_ci_high"]
                or rows[ia]["variance_ci_high"] < rows[ib]["variance_ci_low"]
            ),
        }

    checks = {}
    for baseline in BASELINE_NAMES:
        checks[f"full > rtg [{baseline}]"] = ratio(("full", baseline), ("rtg", baseline)) | {"expect": ">"}
    for mode in RETURNS:
        checks[f"none > mean [{mode}]"] = ratio((mode, "none"), (mode, "mean")) | {"expect": ">"}
        checks[f"mean >= optimal [{mode}]"] = ratio((mode, "mean"), (mode, "optimal")) | {"expect": ">="}
        checks[f"value < none [{mode}]"] = ratio((mode, "value"), (mode, "none")) | {"expect": "<"}
        # diagnostic: the optimal constant fitted on separate episodes against the mean baseline
        checks[f"mean >= optimal* [{mode}]"] = ratio((mode, "mean"), (mode, "optimal*")) | {"expect": ">="}
        # the group baselines: rloo against none and mean; time against mean and the learned value
        checks[f"rloo < none [{mode}]"] = ratio((mode, "rloo"), (mode, "none")) | {"expect": "<"}
        checks[f"rloo < mean [{mode}]"] = ratio((mode, "rloo"), (mode, "mean")) | {"expect": "<"}
        checks[f"time < mean [{mode}]"] = ratio((mode, "time"), (mode, "mean")) | {"expect": "<"}
        checks[f"time < value [{mode}]"] = ratio((mode, "time"), (mode, "value")) | {"expect": "<"}
    for check in checks.values():
        if check["expect"] == ">":
            check["holds"] = check["ci_low"] > 1.0
        elif check["expect"] == "<":
            check["holds"] = check["ci_high"] < 1.0
        else:  # ">=": not significantly smaller
            check["holds"] = check["ci_high"] >= 1.0
    return {"rows": rows, "checks": checks}


# ----- one snapshot -------------------------------------------------------------------------------------------------


def run_snapshot(policy, env_id: str, settings: Settings, seed: int, progress: tqdm) -> dict[str, Any]:
    """
    :param seed: base seed of this snapshot; the three episode sets use seed + 1000, + 2000, + 3000 (make_vec_env
        seeds environment i with seed + i, so the sets never share an environment seed)
    """
    gamma, n = settings.gamma, settings.episodes_per_batch
    t0 = time.time()
    progress.set_postfix_str(f"{env_id}: value fit")
    value_episodes = sample_episodes(policy, env_id, settings.value_batches * n, seed + 1000, progress)
    values = fit_value_functions(value_episodes, gamma, steps=300 if settings.quick else 3000, seed=seed)
    fixed_optimal = fixed_optimal_baselines(policy, value_episodes, gamma)

    progress.set_postfix_str(f"{env_id}: batches")
    episodes = sample_episodes(policy, env_id, settings.batches * n, seed + 2000, progress)
    reference_episodes = sample_episodes(policy, env_id, settings.reference_batches * n, seed + 3000, progress)
    progress.set_postfix_str(f"{env_id}: gradients")
    estimates, explained = [], {"rtg": [], "full": []}
    targets_all, values_all = {"rtg": [], "full": []}, {"rtg": [], "full": []}
    inverse_std: dict[str, list[float]] = {"rtg": [], "full": []}
    for b in range(settings.batches):
        est, extra = batch_estimates(policy, episodes[b * n : (b + 1) * n], gamma, values, fixed_optimal)
        estimates.append(est)
        for mode in RETURNS:
            inverse_std[mode].append(extra["inverse_std"][mode])
        for mode in RETURNS:
            targets_all[mode].append(extra[mode])
            values_all[mode].append(extra[f"v_{mode}"])
        progress.update(n)
    reference = []
    for b in range(settings.reference_batches):
        est, _ = batch_estimates(policy, reference_episodes[b * n : (b + 1) * n], gamma, values, fixed_optimal)
        reference.append(est[: len(ESTIMATORS)])
        progress.update(n)
    estimates_arr, reference_arr = np.array(estimates), np.array(reference)
    rloo_std_scale = {mode: float(np.mean(inverse_std[mode])) for mode in RETURNS}
    for mode in RETURNS:
        # rloo_std estimates E[1/std] times the gradient: rescaled to compare with the others
        estimates_arr[:, ALL_ESTIMATORS.index((mode, "rloo_std"))] /= rloo_std_scale[mode]
    if gamma == 1.0:
        # one estimand: the reference is the mean over all the unbiased estimators
        common = reference_arr[:, REFERENCE_ESTIMATORS].mean(axis=1)
        references = {mode: common for mode in RETURNS}
    else:
        references = {
            mode: reference_arr[:, [e for e in REFERENCE_ESTIMATORS if ESTIMATORS[e][0] == mode]].mean(axis=1)
            for mode in RETURNS
        }
    for mode in RETURNS:
        y, v = np.concatenate(targets_all[mode]), np.concatenate(values_all[mode])
        explained[mode] = float(1 - np.var(y - v) / np.var(y)) if np.var(y) > 0 else float("nan")
    # share of the variance of G_t explained by the time step t alone (a trend no state-only baseline can remove
    # when the state does not contain the time)
    rtg_all = np.concatenate(targets_all["rtg"])
    t_index = np.concatenate([np.arange(len(ep)) for ep in episodes])
    by_t = np.bincount(t_index, weights=rtg_all) / np.bincount(t_index)
    time_explained = float(1 - np.var(rtg_all - by_t[t_index]) / np.var(rtg_all)) if np.var(rtg_all) > 0 else float("nan")
    stats = snapshot_statistics(estimates_arr, references, settings, np.random.default_rng(seed))
    returns = [float(ep.rewards.sum()) for ep in episodes]
    stats.update(
        {
            "episode_return_mean": float(np.mean(returns)),
            "episode_length_mean": float(np.mean([len(ep) for ep in episodes])),
            "value_explained_variance": explained,
            "rtg_variance_explained_by_time": time_explained,
            "rloo_std_mean_inverse_std": rloo_std_scale,
            "n_parameters": int(estimates_arr.shape[2]),
            "seconds": time.time() - t0,
        }
    )
    return stats


# ----- carry-over ---------------------------------------------------------------------------------------------------


class PolicyHistory(BaseCallback):
    """Keeps the policy's parameters at the start of the last two collections (the policies before the last updates)."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[dict[str, th.Tensor]] = []

    def _on_rollout_start(self) -> None:
        self.states = [*self.states[-1:], copy.deepcopy(self.model.policy.state_dict())]

    def _on_step(self) -> bool:
        return True


class CarriedFraction(BaseCallback):
    """The share of carried-over steps of each batch during training (``train/carried_over_fraction``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fractions: list[float] = []

    def _on_rollout_end(self) -> None:
        episodes = self.model.rollout_buffer.finished
        self.fractions.append(sum(ep.carried_over for ep in episodes) / max(1, sum(len(ep) for ep in episodes)))

    def _on_step(self) -> bool:
        return True


def fraction_summary(fractions: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(fractions)), "max": float(np.max(fractions)), "updates": len(fractions)}


def collect_batch(model, callback: BaseCallback, correction: str) -> tuple[list[Episode], int]:
    """
    One batch as the algorithm collects it with ``off_policy_correction=correction`` (its own ``collect_rollouts``).

    :return: the finished episodes and the number of dropped steps (``"sync"``)
    """
    model.off_policy_correction = correction
    model.collect_rollouts(model.env, callback, model.rollout_buffer)
    discarded = model.rollout_buffer.n_discarded_steps
    return model.rollout_buffer.pop_finished(), discarded


def option_estimate(model, episodes: list[Episode]) -> tuple[np.ndarray, float]:
    """
    The reward-to-go estimator with the "mean" baseline, formed as the algorithm's ``train`` forms it for its
    ``off_policy_correction`` (importance weights of the carried steps with ``"importance"``).

    :return: the batch gradient (P,) and the normalised ESS of the importance weights (1 without weights)
    """
    batch = EpisodeBatch.from_episodes(episodes, model.device, isinstance(model.action_space, gym.spaces.Discrete))
    targets, _ = model.compute_returns(batch)
    log_prob = model._log_prob(batch.observations, batch.actions)
    weights = model._importance_weights(batch, log_prob)
    ess = 1.0
    if weights is not None:
        targets, _ = model.compute_returns(batch, weights)
        ess = float(weights.sum() ** 2 / (len(weights) * (weights**2).sum()))
    parameters = actor_parameters(model.policy)
    inputs = PolicyGradientBatch(batch, targets, None, log_prob, model._log_prob, parameters, False, weights=weights)
    gradient = make_baseline("mean").policy_gradient(inputs)
    (rows,) = per_episode_gradients(model._log_prob, parameters, batch, [gradient.advantages])
    return rows.double().mean(dim=0).numpy(), ess


def analyse_carry_over(spec: RunSpec) -> dict[str, Any]:
    """
    The runner's task: train REINFORCE with the shipped settings (module docstring), then the bias and variance of the
    reward-to-go "mean"-baseline estimator for each ``off_policy_correction`` against the on-policy reference.

    :return: ``{"carry_over": {env_id: statistics}}``
    """
    from stable_baselines3.common.callbacks import CallbackList

    settings = Settings(**spec.options)
    t0 = time.time()
    model = make_model(spec, make_env(spec))
    history, carried = PolicyHistory(), CarriedFraction()
    model.learn(settings.carry_train_steps, callback=CallbackList([history, carried]))
    states = [*history.states, copy.deepcopy(model.policy.state_dict())]  # pi_-2, pi_-1, pi_0
    # the estimator as the variance experiment defines it: gamma of the settings, a truncation ends the episode
    model.gamma, model.truncation_as_terminal = settings.gamma, True
    callback = CallbackList([])
    callback.init_callback(model)
    rows: dict[str, list] = {correction: [] for correction in CORRECTIONS}
    ess, fractions, discarded, collected = [], [], [], []
    rng = np.random.default_rng(settings.seed)
    for _ in range(settings.carry_batches):
        # a cycle of the last three policies (the environments run on): pi_0's batch carries episodes begun under
        # pi_-1 and pi_-2, with the log-probabilities of the policy that sampled each step
        for state in states[:-1]:
            model.policy.load_state_dict(state)
            collect_batch(model, callback, "importance")
        model.policy.load_state_dict(states[-1])
        episodes, _ = collect_batch(model, callback, "importance")
        fractions.append(sum(ep.carried_over for ep in episodes) / sum(len(ep) for ep in episodes))
        for correction in ("none", "importance"):
            model.off_policy_correction = correction
            estimate, weights_ess = option_estimate(model, episodes)
            rows[correction].append(estimate)
            if correction == "importance":
                ess.append(weights_ess)
    # "sync": pi_0's own batches with the synchronous rule (it resets the environments when it drops steps)
    for _ in range(settings.carry_batches):
        steps_before = model.num_timesteps
        sync_episodes, discarded_steps = collect_batch(model, callback, "sync")
        discarded.append(discarded_steps)
        collected.append(model.num_timesteps - steps_before)
        rows["sync"].append(option_estimate(model, sync_episodes)[0])
    model.off_policy_correction = "none"
    with tqdm(disable=True) as progress:
        n = settings.episodes_per_batch
        reference_episodes = sample_episodes(
            model.policy, spec.env_id, settings.carry_reference_batches * n, spec.seed + 5000, progress
        )
    reference = np.array(
        [option_estimate(model, reference_episodes[b * n : (b + 1) * n])[0] for b in range(settings.carry_reference_batches)]
    )
    n_batches = settings.carry_batches
    counts = rng.multinomial(n_batches, np.full(n_batches, 1.0 / n_batches), size=settings.bootstrap).astype(np.float64)
    n_ref = len(reference)
    ref_counts = rng.multinomial(n_ref, np.full(n_ref, 1.0 / n_ref), size=settings.bootstrap).astype(np.float64)
    samples = {correction: np.array(rows[correction]) for correction in CORRECTIONS}
    grams = [gram(samples[correction]) for correction in CORRECTIONS]
    boot = bootstrap_traces(grams, settings.bootstrap, rng)
    options = []
    for e, correction in enumerate(CORRECTIONS):
        options.append(
            {
                "correction": correction,
                "variance": float(np.trace(grams[e]) / (n_batches - 1)),
                "variance_ci_low": float(np.percentile(boot[:, e], 2.5)),
                "variance_ci_high": float(np.percentile(boot[:, e], 97.5)),
                **bias_statistics(samples[correction], reference, counts, ref_counts),
            }
        )
    episode_lengths = [len(ep) for ep in reference_episodes]
    result = {
        "options": options,
        "training_carried_over_fraction": fraction_summary(carried.fractions),
        "batch_carried_over_fraction": fraction_summary(fractions),
        "importance_ess": {"mean": float(np.mean(ess)), "min": float(np.min(ess))},
        # "sync": the share of the environment steps of a batch that were dropped
        "sync_discarded_fraction": float(np.sum(discarded) / np.sum(collected)),
        "episode_length_mean": float(np.mean(episode_lengths)),
        "n_envs": spec.n_envs,
        "n_steps": int(model.n_steps),
        "seconds": time.time() - t0,
    }
    return {"carry_over": {spec.env_id: result}}


# ----- the runs ----------------------------------------------------------------------------------------------------


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: one run per environment (``analyse_snapshots``) and the carry-over run on CartPole-v1"""
    settings = {field.name: profile[field.name] for field in fields(Settings)}
    carry = ENVIRONMENTS["CartPole-v1"]
    carry_over = RunSpec(
        run_id=f"CartPole-v1-carry-over-s{settings['seed']}",
        algo="reinforce",
        env_id="CartPole-v1",
        seed=settings["seed"],
        steps=settings["carry_train_steps"],
        kwargs=carry["kwargs"],
        n_envs=carry["n_envs"],
        task="benchmarks.reinforce_variance:analyse_carry_over",
        options=settings,
    )
    return [
        RunSpec(
            run_id=f"{env_id}-s{settings['seed']}",
            algo="reinforce",
            env_id=env_id,
            seed=settings["seed"],
            steps=profile["train_steps"][env_id],
            kwargs=spec["kwargs"],
            n_envs=spec["n_envs"],
            task="benchmarks.reinforce_variance:analyse_snapshots",
            options=settings,
        )
        for env_id, spec in ENVIRONMENTS.items()
    ] + [carry_over]


def analyse_snapshots(spec: RunSpec) -> dict[str, Any]:
    """
    The runner's task: the statistics of the initial policy and of the one REINFORCE reaches after ``spec.steps``.

    :return: ``{"snapshots": {"<env>/<snapshot>": statistics}}``
    """
    settings = Settings(**spec.options)
    model = make_model(spec, make_env(spec))
    initial = copy.deepcopy(model.policy)
    carried = CarriedFraction()
    model.learn(spec.steps, callback=carried)
    snapshots = {"initial": initial, f"trained_{spec.steps // 1000}k": model.policy}
    results = {}
    with tqdm(disable=True) as progress:  # the runner shows the runs' progress
        for k, (name, policy) in enumerate(snapshots.items()):
            snapshot_seed = 100_000 * (settings.seed + 1) + 10_000 * (2 * list(ENVIRONMENTS).index(spec.env_id) + k)
            results[f"{spec.env_id}/{name}"] = run_snapshot(policy, spec.env_id, settings, snapshot_seed, progress)
    return {"snapshots": results, "training_carried_over_fraction": fraction_summary(carried.fractions)}


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: the settings and the statistics of every snapshot"""
    ordered = sorted(
        (run for run in runs.values() if "snapshots" in run), key=lambda run: list(ENVIRONMENTS).index(run["spec"]["env_id"])
    )
    return {
        "settings": {field.name: profile[field.name] for field in fields(Settings)},
        "environments": {
            env_id: {"train_steps": profile["train_steps"][env_id], **spec} for env_id, spec in ENVIRONMENTS.items()
        },
        "snapshots": {key: stats for run in ordered for key, stats in run["snapshots"].items()},
        "training_carried_over_fraction": {run["spec"]["env_id"]: run["training_carried_over_fraction"] for run in ordered},
        "carry_over": {key: stats for run in runs.values() for key, stats in run.get("carry_over", {}).items()},
        "seconds": sum(run["wall_time_s"] for run in runs.values()),
    }


# ----- output ---------------------------------------------------------------------------------------------------


def write_report(results: dict[str, Any], out: Path) -> str:
    """Write ``results.csv`` and the figure; :return: the table of the estimators and the checks"""
    fields = [
        "env",
        "snapshot",
        "returns",
        "baseline",
        "correction",
        "variance",
        "variance_ci_low",
        "variance_ci_high",
        "bias_distance",
        "bias_distance_noise_only",
        "bias_sq_estimate",
        "bias_sq_se",
        "bias_z",
        "bias_p",
        "bias_relative",
    ]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for key, snap in results["snapshots"].items():
            env_id, snapshot = key.split("/")
            for row in snap["rows"]:
                writer.writerow({"env": env_id, "snapshot": snapshot, **row})
        for env_id, carry in results.get("carry_over", {}).items():
            for row in carry["options"]:
                writer.writerow({"env": env_id, "snapshot": "carry_over", "returns": "rtg", "baseline": "mean", **row})
    plot(results, out / "reinforce_variance.png")
    if results.get("carry_over"):
        plot_carry_over(results["carry_over"], out / "carry_over.png")
    return table(results)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = results["snapshots"]
    fig, axes = plt.subplots(1, len(snaps), figsize=(5.2 * len(snaps), 4.2), squeeze=False)
    width = 0.38
    colors = {"full": "#d95f02", "rtg": "#1b9e77"}
    labels = {"full": "full return R(τ)", "rtg": "reward-to-go G_t"}
    for ax, (key, snap) in zip(axes[0], snaps.items(), strict=True):
        names = BASELINE_NAMES + EXTRA_BASELINES
        x = np.arange(len(names))
        for j, mode in enumerate(RETURNS):
            rows = [next(r for r in snap["rows"] if r["returns"] == mode and r["baseline"] == b) for b in names]
            var = np.array([r["variance"] for r in rows])
            err = np.array(
                [[r["variance"] - r["variance_ci_low"] for r in rows], [r["variance_ci_high"] - r["variance"] for r in rows]]
            )
            ax.bar(x + (j - 0.5) * width, var, width, yerr=err, capsize=3, color=colors[mode], label=labels[mode])
        ax.set_yscale("log")
        ax.set_xticks(x, names, rotation=45, fontsize=8)
        ax.set_title(f"{key}\nmean return {snap['episode_return_mean']:.0f}", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0][0].set_ylabel("tr Cov of the batch gradient (log)")
    axes[0][0].legend(fontsize=8)
    s = results["settings"]
    title = f"REINFORCE gradient variance: {s['batches']} batches of {s['episodes_per_batch']} episodes"
    fig.suptitle(f"{title}, gamma={s['gamma']}, 95% bootstrap CIs", fontsize=10)
    fig.text(
        0.5,
        0.01,
        "optimal: the algorithm's leave-one-episode-out estimate of b_k = E[g_k h_k]/E[g_k^2] in each batch;"
        " optimal*: the same b_k estimated once on separate episodes (diagnostic, not an algorithm option)",
        ha="center",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_carry_over(carry_over: dict[str, Any], path: Path) -> None:
    """Bias (squared distance to the on-policy reference, with 95 % intervals) and variance of each correction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(carry_over), 2, figsize=(9.0, 3.6 * len(carry_over)), squeeze=False)
    for (ax_bias, ax_var), (env_id, carry) in zip(axes, carry_over.items(), strict=True):
        rows = carry["options"]
        x = np.arange(len(rows))
        names = [r["correction"] for r in rows]
        bias = np.array([r["bias_sq_estimate"] for r in rows])
        ax_bias.bar(x, bias, yerr=1.96 * np.array([r["bias_sq_se"] for r in rows]), capsize=4, color="#7570b3")
        ax_bias.axhline(0.0, color="black", lw=0.8)
        ax_bias.set_xticks(x, names)
        ax_bias.set_ylabel("||bias||² estimate ± 1.96 se")
        fraction = carry["batch_carried_over_fraction"]["mean"]
        ax_bias.set_title(f"{env_id}: bias vs on-policy reference\ncarried-over share {fraction:.2f}", fontsize=10)
        var = np.array([r["variance"] for r in rows])
        err = np.array(
            [[r["variance"] - r["variance_ci_low"] for r in rows], [r["variance_ci_high"] - r["variance"] for r in rows]]
        )
        ax_var.bar(x, var, yerr=err, capsize=4, color="#1b9e77")
        ax_var.set_xticks(x, names)
        ax_var.set_ylabel("tr Cov of the batch gradient")
        ax_var.set_title("variance, 95 % bootstrap CI", fontsize=10)
    fig.suptitle("off_policy_correction: reward-to-go, mean baseline", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> str:
    """:return: per snapshot, each estimator's variance and bias, then the checks"""
    text = io.StringIO()
    print(
        f"{'snapshot':32s} {'returns':7s} {'baseline':8s} {'variance [95% CI]':>34s} {'bias z':>7s} {'|d|/|ref|':>9s}",
        file=text,
    )
    for key, snap in results["snapshots"].items():
        for r in snap["rows"]:
            ci = f"{r['variance']:.3g} [{r['variance_ci_low']:.3g}, {r['variance_ci_high']:.3g}]"
            print(
                f"{key:32s} {r['returns']:7s} {r['baseline']:8s} {ci:>34s} {r['bias_z']:7.2f} {r['bias_relative']:9.3f}",
                file=text,
            )
        for name, c in snap["checks"].items():
            ratio = f"ratio {c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
            print(f"    {name:26s} {ratio} holds={c['holds']} disjoint CIs={c['cis_disjoint']}", file=text)
    for env_id, fraction in results.get("training_carried_over_fraction", {}).items():
        print(
            f"training {env_id}: carried-over share per batch mean {fraction['mean']:.3f}, max {fraction['max']:.3f}",
            file=text,
        )
    for env_id, carry in results.get("carry_over", {}).items():
        share, train = carry["batch_carried_over_fraction"], carry["training_carried_over_fraction"]
        print(
            f"carry-over {env_id} (episodes {carry['episode_length_mean']:.0f} steps, {carry['n_envs']} envs, "
            f"n_steps {carry['n_steps']}): carried share {share['mean']:.3f} (max {share['max']:.3f}; in training "
            f"{train['mean']:.3f}, max {train['max']:.3f}); importance ESS mean {carry['importance_ess']['mean']:.3f} "
            f"min {carry['importance_ess']['min']:.3f}; sync drops {carry['sync_discarded_fraction']:.3f} of the steps",
            file=text,
        )
        for r in carry["options"]:
            ci = f"{r['variance']:.3g} [{r['variance_ci_low']:.3g}, {r['variance_ci_high']:.3g}]"
            bias = f"{r['bias_sq_estimate']:.3g} +- {r['bias_sq_se']:.3g}"
            print(
                f"    {r['correction']:10s} variance {ci:>34s}  ||bias||^2 {bias:>20s} z {r['bias_z']:6.2f} "
                f"p {r['bias_p']:.3f} |d|/|ref| {r['bias_relative']:.3f}",
                file=text,
            )
    return text.getvalue().rstrip("\n")


FOLDERS = {"full": RESULTS / "reinforce_variance"}
EXPERIMENT = runner.Experiment(
    "reinforce_variance", __doc__, PROFILES, "full", make_specs, summarise, write_report, folders=FOLDERS
)

if __name__ == "__main__":
    runner.main(EXPERIMENT)
