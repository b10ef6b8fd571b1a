"""Monte-Carlo returns, baselines and per-episode gradients for REINFORCE.

Notation. A batch holds N complete episodes tau_i with steps t = 0 .. T_i - 1; s_t = grad_theta log pi(a_t|s_t)
is the score of one step. The policy-gradient estimate of one episode with per-step weights A_t is

    ghat_i = sum_t s_t A_t,        and the update uses   ghat = (1/N) sum_i ghat_i.

The *target* of a step is the discounted reward-to-go G_t = sum_{k>=t} gamma^(k-t) r_k (``reward_to_go=True``)
or the whole-episode discounted return R(tau) = G_0 for every step (``reward_to_go=False``, the estimator
before the causality argument). A baseline b is subtracted, A_t = target_t - b. Every baseline here is
chosen so that it does not depend on the episode's own actions, so the estimator stays unbiased:

- ``"none"``: b = 0.
- ``"mean"``: b for the steps of episode i is the mean of the targets over all steps of the *other*
  episodes of the batch (leave-one-episode-out batch mean; 0 if the batch has a single episode).
  Including episode i's own return would shrink the expected gradient by about a factor (1 - 1/N).
- ``"value"``: b = V(s_t), a learned state-value function regressed on the Monte-Carlo targets. It is
  evaluated *before* it is fitted on the batch (the fit would otherwise see the episode's own returns).
- ``"rloo"`` (REINFORCE leave-one-out, Kool et al. 2019; Ahmadian et al. 2024): b for every step of episode i is
  the mean of the episode returns R(tau_j) = G_0 of the *other* episodes, each episode weighted once whatever its
  length (0 if the batch has a single episode). The batch is the group.
- ``"rloo_std"``: ``"rloo"`` with the advantages of episode i divided by the std of the other episodes' returns, as
  GRPO (Shao et al. 2024) divides by the group's std, but leave-one-out so that the scale does not depend on the
  episode either: the estimate is then unbiased in direction (its mean is E[1/std] times the gradient).
- ``"time"``: b for step t of episode i is the mean of the targets at the *same time index* t over the other
  episodes that last longer than t (0 where none does): the part of G_t that the time step explains, which no
  baseline of a state without the time can remove.
- ``"optimal"``: one constant per parameter k, minimising the variance of the k-th gradient component
  (Greensmith et al. 2004; Peters & Schaal 2008). Writing g_i = sum_t s_t (the score of the episode) and
  h_i = sum_t s_t target_t (the episode's no-baseline estimate), the estimate with baseline b_k is
  h_ik - b_k g_ik, whose variance is minimised (E[g_k] = 0) by

      b_k = E[g_k h_k] / E[g_k^2].

  With full returns h_i = g_i R(tau_i) and this is the textbook b_k = E[g_k^2 R] / E[g_k^2]; with
  reward-to-go it is the exact minimiser for the reward-to-go estimator (the same constant b_k
  multiplies every step of the episode). Expectations are replaced by leave-one-episode-out batch
  averages, b_ik = sum_{j != i} g_jk h_jk / sum_{j != i} g_jk^2, so b_i does not depend on episode i.

Carried-over steps (``off_policy_correction="importance"``). When the first k steps of an episode were sampled by
older policies mu_t (before the previous update), the per-decision importance weights (Precup, Sutton & Singh 2000)
W_t = prod_{j <= min(t, k - 1)} pi(a_j|s_j) / mu_j(a_j|s_j) (W_t = 1 for an episode sampled by the current policy)
re-weight the pair (score of step t, reward of step t') by W_max(t, t'): the reward-to-go target becomes
sum_{t' >= t} gamma^(t'-t) W_t' r_t', the baseline term W_t b_t. The estimator is unbiased for the current policy's
gradient; the weights are constants of the gradient (computed without gradient).

Per-episode gradients are computed with one ``torch.autograd.grad`` call per episode (one forward pass
over that episode's states each). ``torch.func.vmap`` over steps was measured too, but SB3's observation
preprocessing (``F.one_hot`` on Discrete observations) and distribution argument checks are not vmappable,
and the loop costs about one extra forward/backward over the batch plus ~0.4 ms per episode on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from torch.nn import functional as F

from sb3_ppo_variants.common.fast import StandardUpdate
from sb3_ppo_variants.common.guards import NonFiniteGuard
from sb3_ppo_variants.reinforce.episodes import EpisodeBatch, TensorObservation

BaselineName = Literal["none", "mean", "value", "optimal", "rloo", "rloo_std", "time"]
BASELINES: tuple[BaselineName, ...] = ("none", "mean", "value", "optimal", "rloo", "rloo_std", "time")
LogProb = Callable[[TensorObservation, th.Tensor], th.Tensor]


# ----- returns -----------------------------------------------------------------------------------


def discounted_returns(
    rewards: np.ndarray, gamma: float, reward_to_go: bool = True, bootstrap_value: float = 0.0
) -> np.ndarray:
    """
    Monte-Carlo targets of one episode.

    :param rewards: r_0 .. r_{T-1}
    :param gamma: discount factor in (0, 1]
    :param reward_to_go: True: G_t = sum_{k>=t} gamma^(k-t) r_k + gamma^(T-t) bootstrap_value for every t;
        False: the whole-episode return G_0 for every step
    :param bootstrap_value: value of the state after the last step (V(s_T) for a time-limit truncation
        with a learned value, 0 for a terminal state or when the truncation is treated as the end)
    :return: float64 array of shape (T,)
    """
    returns = np.empty(len(rewards), dtype=np.float64)
    running = float(bootstrap_value)
    for t in reversed(range(len(rewards))):
        running = float(rewards[t]) + gamma * running
        returns[t] = running
    if not reward_to_go:
        returns[:] = returns[0]
    return returns


def leave_one_out_mean(targets: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """
    The ``"mean"`` baseline: for each step of episode i, the mean of ``targets`` over the steps of all other episodes.

    :param targets: per-step targets of the batch, shape (n_steps,)
    :param starts: episode boundaries (``EpisodeBatch.starts``)
    :return: per-step baseline, shape (n_steps,) (zeros if the batch has one episode)
    """
    lengths = np.diff(starts)
    sums = np.add.reduceat(targets, starts[:-1]) if len(targets) > 0 else np.zeros(0)
    other_steps = len(targets) - lengths
    other_sums = targets.sum() - sums
    per_episode = np.divide(other_sums, other_steps, out=np.zeros_like(other_sums, dtype=np.float64), where=other_steps > 0)
    return np.repeat(per_episode, lengths)


def leave_one_out_episode_mean(targets: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    The ``"rloo"`` baseline: for each episode i, the mean and the std of the first targets (the episode returns
    G_0) of the other episodes, each episode counted once.

    :param targets: per-step targets of the batch, shape (n_steps,)
    :param starts: episode boundaries (``EpisodeBatch.starts``)
    :return: per-episode leave-one-out mean and population std, each of shape (n_episodes,) (mean 0 and std 0 with
        one episode; std 0 with two)
    """
    returns = targets[starts[:-1]]
    n = len(returns)
    if n < 2:
        return np.zeros(n), np.zeros(n)
    others = n - 1
    mean = (returns.sum() - returns) / others
    mean_sq = ((returns**2).sum() - returns**2) / others
    return mean, np.sqrt(np.maximum(mean_sq - mean**2, 0.0))


def leave_one_out_time_mean(targets: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """
    The ``"time"`` baseline: for step t of episode i, the mean of ``targets`` at time index t over the other episodes
    that have a step t.

    :param targets: per-step targets of the batch, shape (n_steps,)
    :param starts: episode boundaries (``EpisodeBatch.starts``)
    :return: per-step baseline, shape (n_steps,) (0 where no other episode lasts that long)
    """
    lengths = np.diff(starts)
    t_index = np.arange(len(targets)) - np.repeat(starts[:-1], lengths)
    sums = np.bincount(t_index, weights=targets)
    counts = np.bincount(t_index)
    other_sums, other_counts = sums[t_index] - targets, counts[t_index] - 1
    return np.divide(other_sums, other_counts, out=np.zeros_like(targets, dtype=np.float64), where=other_counts > 0)


def importance_weights(log_ratio: np.ndarray, carried_over: Sequence[int], starts: np.ndarray) -> np.ndarray:
    """
    Per-decision importance weights of carried-over steps (module docstring).

    :param log_ratio: log pi(a_t|s_t) - log mu_t(a_t|s_t) of every step of the batch (only the carried steps are read)
    :param carried_over: number of leading steps of each episode sampled before the previous update
    :param starts: episode boundaries (``EpisodeBatch.starts``)
    :return: W_t = prod_{j <= min(t, k - 1)} pi/mu_j of every step, float64 of shape (n_steps,) (exactly 1 in the
        episodes without carried steps)
    """
    weights = np.ones(len(log_ratio), dtype=np.float64)
    for i, k in enumerate(carried_over):
        if k > 0:
            start, end = int(starts[i]), int(starts[i + 1])
            cumulative = np.cumsum(log_ratio[start : start + k].astype(np.float64))
            weights[start : start + k] = np.exp(cumulative)
            weights[start + k : end] = np.exp(cumulative[-1])
    return weights


def weighted_returns(
    rewards: np.ndarray, weights: np.ndarray, gamma: float, reward_to_go: bool = True, bootstrap_value: float = 0.0
) -> np.ndarray:
    """
    Monte-Carlo targets of one episode whose step t' carries the per-decision importance weight W_t'
    (``importance_weights``): the pair (score of t, reward of t') is weighted by W_max(t, t').

    :param rewards: r_0 .. r_{T-1}
    :param weights: W_0 .. W_{T-1}
    :param gamma: discount factor in (0, 1]
    :param reward_to_go: True: sum_{t' >= t} gamma^(t'-t) W_t' r_t'; False: the whole-episode return with the rewards
        before t weighted by W_t and those from t on by W_t'
    :param bootstrap_value: value of the state after the last step (weighted by W_{T-1})
    :return: float64 array of shape (T,); ``discounted_returns`` when every weight is 1
    """
    weighted = discounted_returns(rewards * weights, gamma, True, bootstrap_value * weights[-1])
    if reward_to_go:
        return weighted
    discounts = gamma ** np.arange(len(rewards), dtype=np.float64)
    before = np.concatenate([[0.0], np.cumsum(discounts * rewards)[:-1]])
    return weights * before + discounts * weighted


def optimal_baseline(score_grads: th.Tensor, weighted_grads: th.Tensor, leave_one_out: bool = True) -> th.Tensor:
    """
    The variance-minimising constant baseline per parameter, b_k = E[g_k h_k] / E[g_k^2].

    :param score_grads: g_i = sum_t grad log pi(a_t|s_t) of each episode, shape (N, P)
    :param weighted_grads: h_i = sum_t target_t grad log pi(a_t|s_t) of each episode, shape (N, P)
    :param leave_one_out: True: one baseline per episode from the other episodes, shape (N, P);
        False: the plain batch estimate, shape (P,)
    :return: the baseline (0 where the denominator vanishes)
    """
    g = score_grads.double()
    gh = g * weighted_grads.double()
    gg = g * g
    if leave_one_out:
        numerator = gh.sum(dim=0, keepdim=True) - gh
        denominator = gg.sum(dim=0, keepdim=True) - gg
    else:
        numerator, denominator = gh.sum(dim=0), gg.sum(dim=0)
    # relative guard: a denominator at rounding level of the sum means "no information" (e.g. a single episode)
    tiny = 1e-12 * gg.sum(dim=0).clamp_min(1e-300)
    safe = denominator > tiny
    return th.where(safe, numerator / th.where(safe, denominator, th.ones_like(denominator)), th.zeros_like(numerator))


# ----- per-episode gradients -----------------------------------------------------------------------


def per_episode_gradients(
    log_prob: LogProb,
    parameters: Sequence[th.nn.Parameter],
    batch: EpisodeBatch,
    weights: Sequence[th.Tensor],
) -> list[th.Tensor]:
    """
    For each weight vector w, the per-episode weighted score sums sum_{t in episode i} w_t grad log pi(a_t|s_t).

    :param log_prob: maps (observations, actions) of some steps to log pi(a|s) with gradient, shape (n,)
    :param parameters: the parameters to differentiate (those log pi depends on)
    :param batch: the episodes
    :param weights: per-step weights, each of shape (n_steps,) (no gradient)
    :return: one float32 tensor of shape (N, P) per weight vector, P = total size of ``parameters``
    """
    parameters = list(parameters)
    n_params = sum(p.numel() for p in parameters)
    device = parameters[0].device
    rows = [th.zeros(batch.n_episodes, n_params, device=device) for _ in weights]
    for i in range(batch.n_episodes):
        steps = batch.episode_slice(i)
        log_probs = log_prob(batch.observations_of(steps), batch.actions[steps])
        for j, w in enumerate(weights):
            grads = th.autograd.grad(
                (log_probs * w[steps]).sum(), parameters, retain_graph=j < len(weights) - 1, allow_unused=True
            )
            flat = [(th.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, parameters, strict=True)]
            rows[j][i] = th.cat(flat)
    return rows


def covariance_trace(rows: th.Tensor) -> float:
    """
    :param rows: N samples of a random vector, shape (N, P)
    :return: trace of their unbiased sample covariance, (1 / (N - 1)) sum_i ||x_i - mean x||^2 (NaN if N < 2)
    """
    if rows.shape[0] < 2:
        return float("nan")
    rows = rows.double()
    centred = rows - rows.mean(dim=0, keepdim=True)
    return float((centred * centred).sum() / (rows.shape[0] - 1))


# ----- policy / value parameter split --------------------------------------------------------------


def value_parameters(policy: ActorCriticPolicy) -> list[th.nn.Parameter]:
    """
    Parameters that only the value head uses: ``value_net``, the critic half of the MLP extractor and,
    when the features extractor is not shared, the critic's features extractor. A shared features
    extractor belongs to the policy: fitting the value baseline must not change the policy.

    :param policy: an SB3 actor-critic policy
    :return: the value head's parameters
    """
    modules: list[th.nn.Module] = [policy.value_net]
    critic = getattr(policy.mlp_extractor, "value_net", None)
    if isinstance(critic, th.nn.Module):
        modules.append(critic)
    if not policy.share_features_extractor:
        modules.append(policy.vf_features_extractor)
    seen: set[int] = set()
    params = []
    for module in modules:
        for param in module.parameters():
            if id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def actor_parameters(policy: ActorCriticPolicy) -> list[th.nn.Parameter]:
    """:return: the trainable parameters log pi(a|s) depends on (every parameter not in ``value_parameters``)"""
    value_ids = {id(p) for p in value_parameters(policy)}
    return [p for p in policy.parameters() if p.requires_grad and id(p) not in value_ids]


# ----- baseline objects ------------------------------------------------------------------------------


@dataclass
class PolicyGradientBatch:
    """
    What a baseline needs to form the policy gradient of one REINFORCE update.

    :param batch: the finished episodes
    :param targets: per-step Monte-Carlo targets (reward-to-go or episode return), float64
    :param values: V(s_t) of the batch states before the value fit (value baseline only, else None)
    :param log_prob: log pi(a_t|s_t) of the batch, with gradient (the training forward pass)
    :param log_prob_fn: maps (observations, actions) of some steps to log pi(a|s) with gradient (per-episode gradients)
    :param parameters: the actor's parameters
    :param normalize_advantage: whiten the advantages over the batch (only divide by the std for ``"optimal"``)
    :param weights: per-decision importance weights W_t of the steps (the targets are then already weighted and the
        baseline term is W_t b_t), None when every step was sampled by the current policy
    """

    batch: EpisodeBatch
    targets: np.ndarray
    values: np.ndarray | None
    log_prob: th.Tensor
    log_prob_fn: LogProb
    parameters: list[th.nn.Parameter]
    normalize_advantage: bool
    weights: np.ndarray | None = None


@dataclass
class PolicyGradient:
    """
    The policy-gradient term of one REINFORCE update, as a baseline forms it.

    :param loss: a scalar whose gradient w.r.t. the actor's parameters is -ghat = -(1/N) sum_i ghat_i
    :param pg_loss: the value logged as ``train/policy_gradient_loss``
    :param baseline: the per-step baseline (None for a per-parameter baseline)
    :param advantages: the per-step weights A_t of the scores (None for a per-parameter baseline)
    :param estimates: the per-episode estimates ghat_i, shape (N, P), when the baseline computed them
    """

    loss: th.Tensor
    pg_loss: float
    baseline: np.ndarray | None = None
    advantages: th.Tensor | None = None
    estimates: th.Tensor | None = None


class Baseline:
    """
    A baseline for the REINFORCE estimator and its state. Holds no torch objects, so it is pickled with the
    model by ``save``; the value network lives in the policy and its optimiser on the algorithm.

    ``policy_gradient`` is the one entry point of the update: per-step baselines (none, mean, value) subtract
    ``per_step`` from the targets; a per-parameter baseline (optimal) overrides ``policy_gradient``.

    :ivar last_stats: scalars describing the baseline of the last update, logged under ``train/``
    """

    name: ClassVar[str]
    #: needs the learned state-value function (also enables time-limit bootstrapping)
    uses_value_function: ClassVar[bool] = False

    def __init__(self) -> None:
        self.last_stats: dict[str, float] = {}

    def per_step(self, targets: np.ndarray, batch: EpisodeBatch, values: np.ndarray | None) -> np.ndarray:
        """
        :param targets: per-step Monte-Carlo targets of the batch
        :param batch: the episodes
        :param values: V(s_t) of the batch states before the value fit (value baseline only)
        :return: the baseline b_t of every step
        """
        raise NotImplementedError

    def policy_gradient(self, inputs: PolicyGradientBatch) -> PolicyGradient:
        """
        The REINFORCE loss -(1/N) sum_i sum_t log pi(a_t|s_t) A_t with A_t = target_t - b_t (whitened on request).

        :param inputs: the batch and the policy's log-probabilities
        :return: the policy-gradient term
        """
        baseline = self.per_step(inputs.targets, inputs.batch, inputs.values)
        advantages = inputs.targets - (baseline if inputs.weights is None else inputs.weights * baseline)
        advantages = self.scale(advantages, inputs.batch)
        if inputs.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        weights = th.as_tensor(advantages, dtype=th.float32, device=inputs.log_prob.device)
        loss = -(inputs.log_prob * weights).sum() / inputs.batch.n_episodes
        return PolicyGradient(loss, loss.item(), baseline=baseline, advantages=weights)

    def scale(self, advantages: np.ndarray, batch: EpisodeBatch) -> np.ndarray:
        """:return: the advantages after the baseline's own scaling (none here)"""
        return advantages

    def _record(self, baseline: np.ndarray | th.Tensor) -> None:
        baseline = np.asarray(baseline.detach().cpu() if isinstance(baseline, th.Tensor) else baseline, dtype=np.float64)
        if baseline.size > 0:
            self.last_stats = {"baseline_mean": float(baseline.mean()), "baseline_std": float(baseline.std())}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoBaseline(Baseline):
    """b = 0: vanilla REINFORCE."""

    name = "none"

    def per_step(self, targets: np.ndarray, batch: EpisodeBatch, values: np.ndarray | None) -> np.ndarray:
        self.last_stats = {}
        return np.zeros_like(targets)


class MeanBaseline(Baseline):
    """Leave-one-episode-out batch mean of the targets (see the module docstring)."""

    name = "mean"

    def per_step(self, targets: np.ndarray, batch: EpisodeBatch, values: np.ndarray | None) -> np.ndarray:
        baseline = self.estimate(targets, batch.starts)
        self._record(baseline)
        return baseline

    @staticmethod
    def estimate(targets: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """:return: the per-step baseline of the targets of a batch with these episode boundaries"""
        return leave_one_out_mean(targets, starts)


class ValueBaseline(Baseline):
    """
    Learned V(s) (the value head of the actor-critic policy), regressed on the reward-to-go G_t (a state value,
    whatever the policy's targets are) with its own optimiser: ``n_epochs`` passes over the batch in shuffled
    minibatches of ``batch_size`` (MSE loss).

    :param n_epochs: passes over the batch per update
    :param batch_size: minibatch size of the regression (None: the whole batch)
    :ivar last_value_loss: mean MSE over the regression minibatches of the last update
    :ivar n_fits: number of regressions done
    """

    name = "value"
    uses_value_function = True

    def __init__(self, n_epochs: int = 5, batch_size: int | None = 64) -> None:
        super().__init__()
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.last_value_loss = float("nan")
        self.n_fits = 0

    def per_step(self, targets: np.ndarray, batch: EpisodeBatch, values: np.ndarray | None) -> np.ndarray:
        assert values is not None, "the value baseline needs V(s) of the batch states"
        self._record(values)
        return values

    def fit(
        self,
        steps: StandardUpdate,
        batch: EpisodeBatch,
        value_targets: np.ndarray,
        guard: NonFiniteGuard,
    ) -> float:
        """
        Regress V on the value targets. Minibatch order is drawn from NumPy's global generator (seeded by SB3).

        :param steps: the optimisation steps with the value optimiser (``predict_values``, ``zero_grad``,
            ``gradient_norm``, ``step``: SB3's calls or the fast path's, the same arithmetic)
        :param batch: the episodes
        :param value_targets: the reward-to-go of every step (bootstrapped at time-limit truncations)
        :param guard: the algorithm's numerical guard (a non-finite loss or gradient skips the step)
        :return: mean regression loss over the minibatches
        """
        device = batch.actions.device
        target_tensor = th.as_tensor(value_targets, dtype=th.float32, device=device)
        n_steps = batch.n_steps
        batch_size = n_steps if self.batch_size is None else self.batch_size
        losses = []
        steps.begin()
        for _ in range(self.n_epochs):
            indices = th.as_tensor(np.random.permutation(n_steps), device=device)
            for start in range(0, n_steps, batch_size):
                idx = indices[start : start + batch_size]
                loss = F.mse_loss(steps.predict_values(batch.observations_of(idx)).flatten(), target_tensor[idx])
                steps.zero_grad()
                loss.backward()
                # Numerical guard: a NaN target must not reach the value head's weights
                if guard.skipped("value loss or gradient norm", loss, steps.gradient_norm(), optimizer=steps.optimizer):
                    continue
                steps.step()
                losses.append(loss.item())
        steps.end()
        self.n_fits += 1
        self.last_value_loss = float(np.mean(losses)) if losses else float("nan")
        return self.last_value_loss

    def __repr__(self) -> str:
        return f"ValueBaseline(n_epochs={self.n_epochs}, batch_size={self.batch_size})"


class OptimalBaseline(Baseline):
    """
    Variance-minimising constant baseline per parameter, b_k = E[g_k h_k] / E[g_k^2] (module docstring),
    estimated leave-one-episode-out from the per-episode gradients of the batch.

    :ivar last_baseline: the plain (not leave-one-out) batch estimate of b of the last update, float32 numpy
        array with one entry per policy parameter, for inspection
    """

    name = "optimal"

    def __init__(self) -> None:
        super().__init__()
        self.last_baseline: np.ndarray | None = None

    def policy_gradient(self, inputs: PolicyGradientBatch) -> PolicyGradient:
        """
        The per-episode estimates h_i - b_i g_i (one ``autograd.grad`` per episode and weight vector), and a loss
        whose gradient is minus their mean. With ``normalize_advantage`` the targets are divided by their std
        (the baseline already centres the estimate).
        """
        targets, batch = inputs.targets, inputs.batch
        scale = 1.0
        if inputs.normalize_advantage and len(targets) > 1:
            scale = 1.0 / (float(np.std(targets)) + 1e-8)
        weights = th.as_tensor(targets * scale, dtype=th.float32, device=inputs.log_prob.device)
        # the score sums g_i, importance-weighted (W_t) when steps were carried over
        score_weights = th.ones_like(weights) if inputs.weights is None else th.as_tensor(inputs.weights, dtype=th.float32)
        score_grads, weighted_grads = per_episode_gradients(
            inputs.log_prob_fn, inputs.parameters, batch, [score_weights.to(weights.device), weights]
        )
        estimates = self.estimate(score_grads, weighted_grads)
        # no scalar loss has this gradient: the loss is -<theta, mean ghat_i> (its gradient is exactly -mean ghat_i),
        # and the logged value is the no-baseline surrogate
        flat_parameters = th.cat([param.reshape(-1) for param in inputs.parameters])
        loss = -th.dot(flat_parameters, estimates.mean(dim=0))
        pg_loss = -(inputs.log_prob.detach() * weights).sum() / batch.n_episodes
        return PolicyGradient(loss, pg_loss.item(), estimates=estimates)

    def estimate(self, score_grads: th.Tensor, weighted_grads: th.Tensor) -> th.Tensor:
        """
        :param score_grads: g_i per episode, shape (N, P)
        :param weighted_grads: h_i per episode, shape (N, P)
        :return: per-episode estimates h_i - b_i * g_i with the leave-one-out baseline b_i, shape (N, P)
        """
        self.last_baseline = optimal_baseline(score_grads, weighted_grads, leave_one_out=False).float().cpu().numpy()
        self._record(self.last_baseline)
        baseline = optimal_baseline(score_grads, weighted_grads, leave_one_out=True)
        return (weighted_grads.double() - baseline * score_grads.double()).to(score_grads.dtype)


class RLOOBaseline(Baseline):
    """
    Leave-one-out mean of the other episodes' returns, each episode once (module docstring).

    :ivar group_std: per episode of the last update, the std of the other episodes' returns
    """

    name = "rloo"

    def __init__(self) -> None:
        super().__init__()
        self.group_std = np.zeros(0)

    def per_step(self, targets: np.ndarray, batch: EpisodeBatch, values: np.ndarray | None) -> np.ndarray:
        mean, self.group_std = leave_one_out_episode_mean(targets, batch.starts)
        baseline = np.repeat(mean, np.diff(batch.starts))
        self._record(baseline)
        return baseline


class RLOOStdBaseline(RLOOBaseline):
    """``"rloo"``, then episode i's advantages divided by the std of the other episodes' returns (GRPO-style)."""

    name = "rloo_std"

    def scale(self, advantages: np.ndarray, batch: EpisodeBatch) -> np.ndarray:
        # a group without spread (or a single episode) leaves the advantages unscaled
        std = np.where(self.group_std > 1e-8, self.group_std, 1.0)
        return advantages / np.repeat(std, np.diff(batch.starts))


class TimeBaseline(MeanBaseline):
    """Leave-one-out mean of the targets at the same time index over the other episodes (module docstring)."""

    name = "time"

    @staticmethod
    def estimate(targets: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return leave_one_out_time_mean(targets, starts)


def make_baseline(name: BaselineName, n_epochs: int = 5, batch_size: int | None = 64) -> Baseline:
    """
    :param name: one of ``BASELINES``
    :param n_epochs: passes over the batch of the value regression (value baseline only)
    :param batch_size: minibatch size of the value regression (value baseline only)
    :return: a fresh baseline object
    """
    if name == "value":
        return ValueBaseline(n_epochs=n_epochs, batch_size=batch_size)
    baselines: dict[str, type[Baseline]] = {
        "none": NoBaseline,
        "mean": MeanBaseline,
        "optimal": OptimalBaseline,
        "rloo": RLOOBaseline,
        "rloo_std": RLOOStdBaseline,
        "time": TimeBaseline,
    }
    if name not in baselines:
        raise ValueError(f"baseline must be one of {BASELINES}, got {name!r}")
    return baselines[name]()
