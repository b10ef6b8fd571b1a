"""Frozen snapshots of a policy's action distributions and the exact KL divergence to a newer policy.

SB3's distribution objects are mutable (``proba_distribution`` overwrites them in place), so the
"old" policy of an update is kept as plain parameter tensors (logits, mean and std) for every state
of the rollout. A snapshot can be indexed by minibatch indices and compared with the policy's
current distribution with the analytic KL(pi_old || pi_new), summed over independent action dims.

KL divergence is invariant under invertible maps of the action, so the Gaussian formula is also exact
for SB3's squashed (tanh) Gaussian and for gSDE, whose ``distribution`` is the pre-squash Normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence
from torch.nn import functional as F

KLEstimator = Literal["auto", "analytic", "sample"]
KL_ESTIMATORS: tuple[KLEstimator, ...] = ("auto", "analytic", "sample")

_ANALYTIC_TYPES = (
    DiagGaussianDistribution,  # includes SquashedDiagGaussianDistribution
    StateDependentNoiseDistribution,
    CategoricalDistribution,
    MultiCategoricalDistribution,
    BernoulliDistribution,
)


def has_analytic_kl(distribution: Distribution) -> bool:
    """
    Whether the exact KL of this SB3 distribution is available in closed form.

    :param distribution: an SB3 action distribution (e.g. ``policy.action_dist``)
    :return: True for diagonal Gaussian (also squashed and gSDE), categorical, multi-categorical, Bernoulli
    """
    return isinstance(distribution, _ANALYTIC_TYPES)


def resolve_kl_estimator(kl_estimator: KLEstimator, distribution: Distribution) -> Literal["analytic", "sample"]:
    """
    Turn the user's ``kl_estimator`` choice into ``"analytic"`` or ``"sample"``.

    :param kl_estimator: one of ``KL_ESTIMATORS``
    :param distribution: the policy's action distribution
    :return: the estimator that will be used
    """
    analytic = has_analytic_kl(distribution)
    if kl_estimator == "analytic" and not analytic:
        raise ValueError(
            f"kl_estimator='analytic' is not available for {type(distribution).__name__}; "
            "use kl_estimator='sample' or 'auto' (allowed values: 'auto', 'analytic', 'sample')"
        )
    if kl_estimator == "sample" or not analytic:
        return "sample"
    return "analytic"


def k3(log_ratio: th.Tensor) -> th.Tensor:
    """
    The k3 estimator of KL(pi_old || pi_new) per sample a ~ pi_old: (r - 1) - log r, r = pi_new(a|s) / pi_old(a|s).
    Its mean is unbiased and every term is >= 0 (SB3 PPO's estimator, http://joschu.net/blog/kl-approx.html).

    :param log_ratio: log pi_new(a|s) - log pi_old(a|s) of actions sampled from pi_old
    :return: tensor of the same shape
    """
    return th.expm1(log_ratio) - log_ratio


def _gaussian_kl(loc: th.Tensor, scale: th.Tensor, new_loc: th.Tensor, new_scale: th.Tensor) -> th.Tensor:
    """KL(N(loc, scale) || N(new_loc, new_scale)) per dimension (torch's formula, without building distributions)."""
    var_ratio = (scale / new_scale).pow(2)
    t1 = ((loc - new_loc) / new_scale).pow(2)
    return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())


def _gaussian_mean_kl(
    loc: th.Tensor, var: th.Tensor, log_scale_sum: th.Tensor, new_loc: th.Tensor, new_scale: th.Tensor
) -> th.Tensor:
    """
    Mean over the batch of KL(N(loc, scale) || N(new_loc, new_scale)) summed over dimensions, written as
    sum(log new_scale + ((new_loc - loc)^2 + var) / (2 new_scale^2)) - sum(log scale + 1/2), so that the old
    policy's terms (``var`` = scale^2, ``log_scale_sum`` = sum over dimensions of log scale + 1/2 per state) are
    computed once per update and the penalty adds few operations (and few backward nodes) per minibatch.
    """
    diff = new_loc - loc
    per_dim = th.add(new_scale.log(), (diff * diff + var) / (new_scale * new_scale), alpha=0.5)
    return (per_dim.sum() - log_scale_sum.sum()) / len(loc)


def _categorical_kl(log_probs: th.Tensor, new_log_probs: th.Tensor, reduction: str = "none") -> th.Tensor:
    """
    KL(p || q) from p's and q's normalised log-probabilities (torch's ``Categorical.logits``), in one fused
    ``F.kl_div`` call: summed over the last dimension (``reduction="none"``, shape (batch,)) or also
    averaged over the batch (``"batchmean"``). ``log_probs`` must be finite (see ``_finite_log_probs``); so is
    ``new_log_probs`` made: an action of probability 0 under both policies (action masking) then adds
    0 * (finite - finite) = 0 instead of 0 * inf = NaN, and gradients flow unchanged where the value is finite.
    """
    new_log_probs = _finite_log_probs(new_log_probs)
    if reduction == "batchmean":
        return F.kl_div(new_log_probs, log_probs, reduction="batchmean", log_target=True)
    return F.kl_div(new_log_probs, log_probs, reduction="none", log_target=True).sum(dim=-1)


def _finite_log_probs(log_probs: th.Tensor) -> th.Tensor:
    """
    Log-probabilities with -inf (an action of probability 0) clamped to the most negative float, as
    ``Categorical.entropy`` does: its term p * (log p - log q) is then exactly 0 instead of NaN (0 * -inf).
    """
    return log_probs.clamp(min=th.finfo(log_probs.dtype).min)


@dataclass
class DistributionSnapshot:
    """
    Detached parameters of a batch of action distributions, in the form the closed-form KL needs.

    The KL is computed from plain tensors rather than through ``torch.distributions`` objects: it runs
    once per minibatch in PPOKL's loss, where building and validating distribution objects cost more
    than the arithmetic (see ``benchmarks/overhead.py``).

    :param kind: ``"normal"``, ``"categorical"``, ``"multicategorical"`` or ``"bernoulli"``
    :param params: the tensors that define the distributions, first dimension = batch
        (normal: mean, std, variance, sum over dimensions of log std + 1/2; categorical: normalised
        log-probabilities, -inf clamped to the most negative float; multicategorical: those of each sub-space
        in turn; bernoulli: logits)
    """

    kind: str
    params: tuple[th.Tensor, ...]

    @classmethod
    def from_distribution(cls, distribution: Distribution) -> DistributionSnapshot:
        """
        Freeze the current state of an SB3 distribution.

        :param distribution: an SB3 distribution with analytic KL (see ``has_analytic_kl``)
        :return: the snapshot (tensors detached, so later updates of the policy do not change it)
        """
        torch_dist: Any = distribution.distribution  # a torch Distribution, or a list of Categorical
        if isinstance(torch_dist, Normal):
            loc, scale = torch_dist.loc.detach(), torch_dist.scale.detach()
            return cls("normal", (loc, scale, scale * scale, (scale.log() + 0.5).sum(dim=-1)))
        if isinstance(torch_dist, Categorical):
            return cls("categorical", (_finite_log_probs(torch_dist.logits.detach()),))
        if isinstance(torch_dist, Bernoulli):
            return cls("bernoulli", (torch_dist.logits.detach(),))
        if isinstance(torch_dist, list | tuple) and all(isinstance(d, Categorical) for d in torch_dist):
            return cls("multicategorical", tuple(_finite_log_probs(d.logits.detach()) for d in torch_dist))
        raise TypeError(f"No analytic KL for distribution {type(distribution).__name__}")

    def __len__(self) -> int:
        return len(self.params[0])

    def __getitem__(self, indices: np.ndarray | th.Tensor | slice) -> DistributionSnapshot:
        if isinstance(indices, np.ndarray):
            indices = th.as_tensor(indices, device=self.params[0].device)
        return DistributionSnapshot(self.kind, tuple(p[indices] for p in self.params))

    def kl_to(self, distribution: Distribution) -> th.Tensor:
        """
        Exact KL(self || distribution) for every state, summed over independent action dimensions.

        :param distribution: the SB3 distribution of the current policy on the same states
            (gradients flow through it, not through the snapshot)
        :return: tensor of shape (batch,)
        """
        new: Any = distribution.distribution  # a torch Distribution, or a list of them (multi-categorical)
        if self.kind == "normal":
            return _gaussian_kl(self.params[0], self.params[1], new.loc, new.scale).sum(dim=-1)
        if self.kind == "categorical":
            return _categorical_kl(self.params[0], new.logits)
        if self.kind == "bernoulli":
            return kl_divergence(Bernoulli(logits=self.params[0]), new).sum(dim=-1)
        kls = [_categorical_kl(log_probs, d.logits) for log_probs, d in zip(self.params, new, strict=True)]
        return th.stack(kls, dim=-1).sum(dim=-1)

    def kl_from(self, distribution: Distribution) -> th.Tensor:
        """
        Exact KL(distribution || self) for every state, summed over independent action dimensions: the reverse of
        ``kl_to`` (the reference-policy term's KL(pi_theta || pi_ref), with the reference as the snapshot).

        :param distribution: the SB3 distribution of the current policy on the same states (gradients flow through it)
        :return: tensor of shape (batch,)
        """
        new: Any = distribution.distribution
        if self.kind == "normal":
            return _gaussian_kl(new.loc, new.scale, self.params[0], self.params[1]).sum(dim=-1)
        if self.kind == "categorical":
            return _categorical_kl(_finite_log_probs(new.logits), self.params[0])
        if self.kind == "bernoulli":
            return kl_divergence(new, Bernoulli(logits=self.params[0])).sum(dim=-1)
        kls = [_categorical_kl(_finite_log_probs(d.logits), log_probs) for log_probs, d in zip(self.params, new, strict=True)]
        return th.stack(kls, dim=-1).sum(dim=-1)

    def mean_kl_to(self, distribution: Distribution) -> th.Tensor:
        """
        ``kl_to(distribution).mean()`` (equal up to float rounding), with fewer tensor operations for Gaussian and
        (multi-)categorical distributions: it runs once per minibatch inside PPOKL's loss, where each extra
        operation and its backward node cost time (see ``benchmarks/overhead.py``).

        :param distribution: as for ``kl_to``
        :return: scalar tensor
        """
        new: Any = distribution.distribution
        if self.kind == "normal":
            return _gaussian_mean_kl(self.params[0], self.params[2], self.params[3], new.loc, new.scale)
        if self.kind == "categorical":
            return _categorical_kl(self.params[0], new.logits, reduction="batchmean")
        if self.kind == "multicategorical":
            pairs = zip(self.params, new, strict=True)
            return sum(_categorical_kl(log_probs, d.logits, reduction="batchmean") for log_probs, d in pairs)  # type: ignore[return-value]
        return self.kl_to(distribution).mean()


def mean_kl(old: DistributionSnapshot | None, new: Distribution, log_ratio: th.Tensor) -> th.Tensor:
    """
    Mean KL(pi_old || pi_new) over a batch, differentiable w.r.t. the new policy: exact when the old policy's
    distributions are known, else the mean k3 estimate on the batch actions (PPOKL's penalty).

    :param old: the old policy on the batch states, or None (sample-based estimate)
    :param new: the current policy's distribution on the same states
    :param log_ratio: log pi_new(a|s) - log pi_old(a|s) of the batch actions
    :return: scalar tensor
    """
    return old.mean_kl_to(new) if old is not None else k3(log_ratio).mean()


def kl_per_state(old: DistributionSnapshot | None, new: Distribution, log_ratio: th.Tensor) -> th.Tensor:
    """
    :return: per-state exact KL(pi_old || pi_new) (``mean_kl`` before the mean), or the k3 terms when ``old`` is None
    """
    return old.kl_to(new) if old is not None else k3(log_ratio)
