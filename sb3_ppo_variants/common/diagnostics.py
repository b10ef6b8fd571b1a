"""The diagnostics vocabulary shared by every algorithm of the package.

Each estimator is a small pure function (unit-tested against hand-computed values); the
accumulators collect them over the minibatches of one update and write the ``train/`` keys that
the README's metrics table documents. Diagnostics only *read* tensors: they draw no random numbers
and never touch gradients, so switching them on or off cannot change what is learned.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger

DIAGNOSTICS_LEVELS = ("off", "basic", "full")


def check_diagnostics_level(diagnostics: str) -> str:
    """
    :param diagnostics: the user's choice
    :return: the same value, if it is one of ``DIAGNOSTICS_LEVELS``
    """
    if diagnostics not in DIAGNOSTICS_LEVELS:
        raise ValueError(f"diagnostics must be one of {DIAGNOSTICS_LEVELS}, got {diagnostics!r}")
    return diagnostics


def approx_kl_k3(log_ratio: th.Tensor) -> th.Tensor:
    """
    k3 estimator of KL(pi_old || pi_new) from samples a ~ pi_old: mean((r - 1) - log r), r = pi_new/pi_old.
    Unbiased and always >= 0 (SB3 PPO's estimator, see http://joschu.net/blog/kl-approx.html).

    :param log_ratio: log pi_new(a|s) - log pi_old(a|s) for actions sampled from pi_old
    :return: scalar tensor
    """
    return th.mean(th.expm1(log_ratio) - log_ratio)


def effective_sample_size(weights: th.Tensor) -> th.Tensor:
    """
    Normalised effective sample size of importance weights: (sum w)^2 / (n * sum w^2), in (0, 1].
    1 means all weights are equal (on-policy); 1/n means a single sample carries all the weight.

    :param weights: importance ratios pi_new/pi_old, shape (n,)
    :return: scalar tensor
    """
    weights = weights.double()
    return weights.sum() ** 2 / (weights.numel() * (weights**2).sum())


def flat_grad(parameters: Iterable[th.nn.Parameter]) -> th.Tensor:
    """
    :param parameters: parameters whose ``.grad`` were filled by ``backward()``
    :return: all gradients concatenated into one detached vector (parameters without gradient skipped)
    """
    return th.cat([p.grad.detach().reshape(-1) for p in parameters if p.grad is not None])


class GradientStatistics:
    """
    Streaming statistics of the gradient vectors g_1..g_m of the minibatches of one update.

    ``snr`` = ||mean g||^2 / mean ||g_i - mean g||^2: how much of the gradient is signal shared by all
    minibatches versus minibatch-to-minibatch noise. Accumulated in float64 with O(number of parameters)
    memory and a few tensor operations per minibatch; read once at the end (no device sync per minibatch).
    """

    def __init__(self) -> None:
        self.count = 0
        self.sum: th.Tensor | None = None
        self.sum_sq_norm: th.Tensor | float = 0.0
        self.norms: list[float | th.Tensor] = []

    def add(self, gradient: th.Tensor | None = None, norm: float | th.Tensor | None = None) -> None:
        """
        :param gradient: flat gradient vector of one minibatch (for the SNR), or None
        :param norm: its global norm before clipping (for ``grad_norm``); computed from ``gradient`` if omitted
        """
        if gradient is not None:
            if self.sum is None:
                self.sum = gradient.detach().to(th.float64, copy=True)
            else:
                self.sum.add_(gradient.detach())
            self.sum_sq_norm = self.sum_sq_norm + th.dot(gradient, gradient).double()
            self.count += 1
            if norm is None:
                norm = gradient.norm()
        if norm is not None:
            self.norms.append(norm.detach() if isinstance(norm, th.Tensor) else norm)

    def snr(self) -> float:
        """:return: the gradient signal-to-noise ratio, NaN with fewer than two gradients"""
        if self.count < 2 or self.sum is None:
            return float("nan")
        mean = self.sum / self.count
        signal = float(mean @ mean)
        noise = float(self.sum_sq_norm) / self.count - signal
        if noise <= 0.0:
            return float("inf")
        return signal / noise

    def mean_norm(self) -> float:
        """:return: mean global gradient norm over the minibatches, NaN if none"""
        return float(np.mean([float(norm) for norm in self.norms])) if self.norms else float("nan")


def grad_snr(gradients: Iterable[th.Tensor]) -> float:
    """
    :param gradients: flat gradient vectors, one per minibatch
    :return: ||mean g||^2 / mean ||g - mean g||^2
    """
    stats = GradientStatistics()
    for gradient in gradients:
        stats.add(gradient)
    return stats.snr()


class RatioStatistics:
    """
    Importance ratio statistics pooled over every sample of every minibatch of one update (mean,
    population std, min, max), the mean over minibatches of each minibatch's ESS and, given a clip range,
    the mean over minibatches of the fractions clipped below 1 - eps and above 1 + eps.
    ``add`` only keeps a reference to the (detached) ratios; everything is computed once, in ``summary``.
    """

    def __init__(self) -> None:
        self._ratios: list[th.Tensor] = []

    def add(self, ratio: th.Tensor) -> None:
        """:param ratio: importance ratios of one minibatch"""
        if ratio.numel() > 0:
            self._ratios.append(ratio.detach().reshape(-1))

    def summary(self, clip_range: float | None = None) -> dict[str, float]:
        """
        :param clip_range: eps, to add ``clip_fraction_low`` and ``clip_fraction_high``
        :return: ``ratio_mean``, ``ratio_std``, ``ratio_min``, ``ratio_max``, ``ess`` (empty if no data)
        """
        if not self._ratios:
            return {}
        ratios = th.cat(self._ratios).double().cpu().numpy()
        starts = np.cumsum([0] + [len(r) for r in self._ratios[:-1]])
        sizes = np.array([len(r) for r in self._ratios], dtype=np.float64)
        sums = np.add.reduceat(ratios, starts)
        sums_sq = np.add.reduceat(ratios**2, starts)
        values = {
            "ratio_mean": float(ratios.mean()),
            "ratio_std": float(ratios.std()),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
            # effective_sample_size of each minibatch, (sum w)^2 / (n sum w^2), averaged over minibatches
            "ess": float(np.mean(sums**2 / (sizes * sums_sq))),
        }
        if clip_range is not None:
            values["clip_fraction_low"] = float(np.mean(np.add.reduceat(ratios < 1 - clip_range, starts) / sizes))
            values["clip_fraction_high"] = float(np.mean(np.add.reduceat(ratios > 1 + clip_range, starts) / sizes))
        return values


def record_mean(logger: Logger, key: str, values: list[float] | list[th.Tensor]) -> None:
    """Record the mean of a list of scalars (nothing if the list is empty)."""
    if len(values) > 0:
        logger.record(key, float(np.mean([float(v) for v in values])))


def record_dict(logger: Logger, values: dict[str, float], prefix: str = "train/") -> None:
    """Record every item of ``values`` under ``prefix``."""
    for key, value in values.items():
        logger.record(prefix + key, value)
