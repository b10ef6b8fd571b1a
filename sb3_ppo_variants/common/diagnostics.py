"""The measurement layer shared by every algorithm of the package.

Each update loop calls it at a few fixed points:

- ``OldPolicy(policy, observations, actions, log_prob, kl_method)`` at the start of an update: the policy before
  the update on the batch (its exact distributions where an analytic KL exists). PPOKL's penalty indexes it by
  minibatch; ``OldPolicy.measure(policy)`` after the update gives the ``PolicyChange`` (per-state KL, log-ratios).
- ``diagnostics.begin_update()``, ``diagnostics.add_minibatch(...)`` per optimizer step (PPO family), and
  ``diagnostics.record(logger, change, ...)`` once per update, which writes the shared ``train/`` keys that the
  metrics table of docs/diagnostics.md documents.

``make_diagnostics(level)`` gives the object for a level; ``"off"`` gets one that does nothing. Every forward
pass of the layer runs inside ``measuring(policy)``: eval mode (no dropout, no batch-norm statistics update),
``no_grad`` and ``torch.random.fork_rng``, so no diagnostics level can change what is learned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy

from sb3_ppo_variants.common.distributions import DistributionSnapshot, KLEstimator, k3, kl_per_state, resolve_kl_estimator
from sb3_ppo_variants.common.guards import NonFiniteGuard

if TYPE_CHECKING:
    from sb3_ppo_variants.common.fast import PolicyKernel

DiagnosticsLevel = Literal["off", "basic", "full"]
DIAGNOSTICS_LEVELS: tuple[DiagnosticsLevel, ...] = ("off", "basic", "full")
Observations = th.Tensor | dict[str, th.Tensor]


@contextmanager
def measuring(policy: BasePolicy, no_grad: bool = True) -> Iterator[None]:
    """
    Run a measurement on the policy without touching what is learned: eval mode (restored on exit), no gradient
    (unless the measurement differentiates, ``no_grad=False``; it must not touch ``.grad`` then), and PyTorch's
    random state restored on exit (also on the policy's CUDA device). (``OldPolicy`` with a ``PolicyKernel`` whose
    forward passes depend on no mode and draw nothing needs only ``no_grad``: switching every module's mode twice
    costs more than its forward pass on CartPole.)
    """
    was_training = policy.training
    devices = [policy.device] if policy.device.type == "cuda" else []
    policy.set_training_mode(False)
    try:
        with th.set_grad_enabled(not no_grad), th.random.fork_rng(devices=devices):
            yield
    finally:
        policy.set_training_mode(was_training)


@dataclass
class PolicyChange:
    """
    What an update did to the policy on the states and actions of its batch (measured once, after the update).

    :param kl: per-state KL(pi_old || pi_new): exact (summed over independent action dimensions), or the k3 terms
        on the batch actions where no analytic KL exists
    :param log_ratio: log pi_new(a|s) - log pi_old(a|s) of the batch actions
    :param distribution: the new policy's distribution on the batch states (a copy: later forward passes do not change it)
    """

    kl: th.Tensor
    log_ratio: th.Tensor
    distribution: Distribution


class OldPolicy:
    """
    The policy before an update on a batch: the states, the actions and their log-probabilities under the old
    policy (from the rollout) and, with ``kl_method="analytic"``, a frozen ``DistributionSnapshot`` of the old
    policy on every state and a copy of its SB3 distribution (one forward pass, inside ``measuring``).

    :param policy: the policy, before the update
    :param observations: the batch states
    :param actions: the batch actions, in the form the policy's ``log_prob`` takes
    :param log_prob: log pi_old(a|s) of those actions (the rollout's), or None to compute it here
    :param kl_method: ``"analytic"`` or ``"sample"`` (see ``resolve_kl_estimator``)
    :param kernel: the fast path's ``PolicyKernel`` of the policy, or None: its ``get_distribution`` (the same values
        as the policy's, with less overhead) then runs the forward passes, here and in ``measure``
    """

    def __init__(
        self,
        policy: BasePolicy,
        observations: Observations,
        actions: th.Tensor,
        log_prob: th.Tensor | None,
        kl_method: Literal["analytic", "sample"],
        kernel: PolicyKernel | None = None,
    ) -> None:
        self.observations = observations
        self.actions = actions
        self.distributions: DistributionSnapshot | None = None
        self.distribution: Distribution | None = None
        self.kernel = kernel
        if kl_method == "analytic" or log_prob is None:
            with self._measuring(policy):
                distribution = self._get_distribution(policy, observations)
                if kl_method == "analytic":
                    self.distributions = DistributionSnapshot.from_distribution(distribution)
                    self.distribution = copy.copy(distribution)
                if log_prob is None:
                    log_prob = distribution.log_prob(actions)
        self.log_prob: th.Tensor = log_prob

    def __getitem__(self, indices: np.ndarray) -> DistributionSnapshot | None:
        """:return: the old policy's distributions on a minibatch (None with the sample-based KL)"""
        return self.distributions[indices] if self.distributions is not None else None

    def _measuring(self, policy: BasePolicy) -> AbstractContextManager[Any]:
        if self.kernel is not None and self.kernel.mode_independent:
            # the kernel's forward passes neither depend on the mode nor draw random numbers: measuring's no_grad alone
            return th.no_grad()
        return measuring(policy)

    def _get_distribution(self, policy: BasePolicy, observations: Observations) -> Distribution:
        if self.kernel is not None:
            return self.kernel.get_distribution(observations)  # type: ignore[arg-type]
        return policy.get_distribution(observations)  # type: ignore[operator]

    def measure(self, policy: BasePolicy) -> PolicyChange:
        """:return: how far ``policy`` (after the update) moved from the old policy on the batch"""
        with self._measuring(policy):
            distribution = self._get_distribution(policy, self.observations)
            log_ratio = distribution.log_prob(self.actions) - self.log_prob
            kl = kl_per_state(self.distributions, distribution, log_ratio)
            return PolicyChange(kl, log_ratio, copy.copy(distribution))


# ----- statistics ----------------------------------------------------------------------------------


class GradientStatistics:
    """
    Streaming statistics of the gradient vectors g_1..g_m of the minibatches of one update.

    ``snr`` = ||mean g||^2 / mean ||g_i - mean g||^2: how much of the gradient is signal shared by all
    minibatches versus minibatch-to-minibatch noise. Accumulated in float64 with O(number of parameters)
    memory and one tensor operation per minibatch (the sum; mean ||g_i||^2 comes from the norms the update loop
    computed anyway); read once at the end (no device sync per minibatch).
    """

    def __init__(self, plain: Callable[[th.Tensor], th.Tensor] | None = None) -> None:
        """
        :param plain: turns a vector in the layout of the gradients given to ``add`` into the parameters' values end to
            end (the fast path's gradients carry FlatAdam's alignment padding: zeros, which ``mean @ mean`` would sum in
            another order); None: they are plain
        """
        self.count = 0
        self.sum: th.Tensor | None = None
        self.norms: list[th.Tensor] = []
        self.plain = plain

    def add(self, gradient: th.Tensor, norm: th.Tensor) -> None:
        """
        :param gradient: flat gradient vector of one minibatch
        :param norm: its global norm
        """
        if self.sum is None:
            self.sum = gradient.detach().to(th.float64, copy=True)
        else:
            self.sum.add_(gradient.detach())
        self.count += 1
        self.norms.append(norm.detach())

    def snr(self) -> float:
        """:return: the gradient signal-to-noise ratio, NaN with fewer than two gradients"""
        if self.count < 2 or self.sum is None:
            return float("nan")
        mean = self.sum / self.count
        if self.plain is not None:
            mean = self.plain(mean)
        signal = float(mean @ mean)
        noise = float((th.stack(self.norms).double() ** 2).mean()) - signal
        if noise <= 0.0:
            return float("inf")
        return signal / noise

    def mean_norm(self) -> float:
        """:return: mean global gradient norm over the minibatches, NaN if none"""
        return float(th.stack(self.norms).double().mean()) if self.norms else float("nan")


def _ess_of_logs(log_weights: np.ndarray) -> float:
    """:return: the normalised ESS of the weights exp(log_weights), scaled by their largest (float64)"""
    weights = np.exp(log_weights - log_weights.max())
    return float(weights.sum() ** 2 / (len(weights) * (weights * weights).sum()))


class RatioStatistics:
    """
    Importance ratio statistics pooled over every sample of every minibatch of one update (mean,
    population std, min, max), the mean over minibatches of each minibatch's normalised effective sample size
    (sum w)^2 / (n sum w^2) and, given a clip range, the mean over minibatches of the fractions clipped below
    1 - eps and above 1 + eps. ``add`` only keeps a reference to the (detached) ratios; everything is computed
    once, in ``summary``.

    The ratios are float32 ``exp(log_ratio)``: far from the sampling policy they leave float32's range (every ratio
    of a minibatch 0, or some infinite), where the ESS formula gives 0/0 or inf/inf. The ESS is invariant to scaling
    the weights, so such a minibatch's is computed from its log ratios in float64 (w = exp(l - max l)) when ``add``
    got them, else it is NaN (not known from the ratios).
    """

    def __init__(self) -> None:
        self._ratios: list[th.Tensor] = []
        self._log_ratios: list[th.Tensor | None] = []

    def add(self, ratio: th.Tensor, log_ratio: th.Tensor | None = None) -> None:
        """
        :param ratio: importance ratios of one minibatch
        :param log_ratio: their logarithms (kept by reference; used only where the ratios left float32's range)
        """
        if ratio.numel() > 0:
            self._ratios.append(ratio.detach().reshape(-1))
            self._log_ratios.append(None if log_ratio is None else log_ratio.detach().reshape(-1))

    def __len__(self) -> int:
        return len(self._ratios)

    def summary(self, clip_range: float | None = None) -> dict[str, float]:
        """
        :param clip_range: eps, to add ``clip_fraction_low`` and ``clip_fraction_high``
        :return: ``ratio_mean``, ``ratio_std``, ``ratio_min``, ``ratio_max``, ``ess`` (empty if no data)
        """
        if not self._ratios:
            return {}
        ratios = th.cat(self._ratios).double().cpu().numpy()
        sizes = np.array([len(r) for r in self._ratios])
        if (sizes == sizes[0]).all():
            # minibatches of one size (the usual case): one row each

            def per_minibatch(values: np.ndarray) -> np.ndarray:
                return values.reshape(len(sizes), -1).sum(axis=1)
        else:
            starts = np.concatenate(([0], np.cumsum(sizes[:-1])))

            def per_minibatch(values: np.ndarray) -> np.ndarray:
                return np.add.reduceat(values, starts)

        sums, sums_sq = per_minibatch(ratios), per_minibatch(ratios * ratios)
        with np.errstate(invalid="ignore", divide="ignore"):
            ess = sums**2 / (sizes * sums_sq)
        for i in np.flatnonzero((sums_sq == 0) | np.isinf(sums_sq)):  # ratios outside float32's range (class doc)
            log_ratio = self._log_ratios[i]
            ess[i] = np.nan if log_ratio is None else _ess_of_logs(log_ratio.double().cpu().numpy())
        values = {
            "ratio_mean": float(ratios.mean()),
            "ratio_std": float(ratios.std()),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
            "ess": float(np.mean(ess)),
        }
        if clip_range is not None:
            values["clip_fraction_low"] = float(np.mean(per_minibatch(ratios < 1 - clip_range) / sizes))
            values["clip_fraction_high"] = float(np.mean(per_minibatch(ratios > 1 + clip_range) / sizes))
        return values


# ----- the diagnostics objects ---------------------------------------------------------------------


class Diagnostics:
    """
    ``diagnostics="off"``: measures nothing. The base of the measurement layer: each update loop calls
    ``begin_update()``, ``add_minibatch(...)`` after each optimizer step's gradient is final (PPO family) and
    ``record(...)`` once at the end.
    """

    level: DiagnosticsLevel = "off"

    @property
    def enabled(self) -> bool:
        """:return: whether anything is measured (``level != "off"``)"""
        return self.level != "off"

    def begin_update(self, plain: Callable[[th.Tensor], th.Tensor] | None = None) -> None:
        """
        Start the statistics of a new update.

        :param plain: the layout of the gradients ``add_minibatch`` will get (``GradientStatistics``; None: plain)
        """

    def add_minibatch(
        self, ratio: th.Tensor, gradient: Callable[[], th.Tensor], grad_norm: th.Tensor, log_ratio: th.Tensor | None = None
    ) -> None:
        """
        :param ratio: importance ratios pi_new / pi_old of the minibatch
        :param gradient: returns the minibatch gradient before clipping as one flat vector (called only by the levels
            that need it: every ``enabled`` level)
        :param grad_norm: the global gradient norm before clipping (as returned by ``clip_grad_norm_``)
        :param log_ratio: log(pi_new / pi_old) of the minibatch, for the ESS where the ratios leave float32's range
        """

    def record(
        self,
        logger: Logger,
        change: PolicyChange | None,
        clip_range: float | None = None,
        approx_kl: bool = False,
    ) -> None:
        """
        Write the shared keys of one update.

        :param logger: the algorithm's logger
        :param change: what the update did (``OldPolicy.measure``); None if it was not measured
        :param clip_range: the clip range of the update, for the clip fractions below 1 - eps and above 1 + eps
        :param approx_kl: also log ``approx_kl`` (k3 on the batch, after the update) for algorithms whose loop
            does not estimate it per minibatch
        """
        for key, value in self._values(change, clip_range, approx_kl).items():
            logger.record(f"train/{key}", value)
        if self.level == "full" and change is not None and change.kl.numel() > 0:
            logger.record("train/policy_kl_max", change.kl.max().item())
            logger.record("train/policy_kl_hist", change.kl.detach().cpu(), exclude=("stdout", "log", "json", "csv"))
        self.begin_update()  # the update is written: nothing of it reaches the next one (one-step loops start none)

    def _values(self, change: PolicyChange | None, clip_range: float | None, approx_kl: bool) -> dict[str, float]:
        """:return: the scalar keys of the update (none at ``"off"``)"""
        return {}


class BasicDiagnostics(Diagnostics):
    """
    ``diagnostics="basic"``: ``policy_kl``, ratio statistics, ESS, gradient norm and signal-to-noise (cheap); at
    ``"full"`` (``FullDiagnostics``) also the maximum and a histogram of the per-state KL.
    """

    level: DiagnosticsLevel = "basic"

    def __init__(self) -> None:
        self.begin_update()

    def begin_update(self, plain: Callable[[th.Tensor], th.Tensor] | None = None) -> None:
        self._ratios = RatioStatistics()
        self._gradients = GradientStatistics(plain)

    def add_minibatch(
        self, ratio: th.Tensor, gradient: Callable[[], th.Tensor], grad_norm: th.Tensor, log_ratio: th.Tensor | None = None
    ) -> None:
        self._ratios.add(ratio, log_ratio)
        self._gradients.add(gradient(), grad_norm)

    def _values(self, change: PolicyChange | None, clip_range: float | None, approx_kl: bool) -> dict[str, float]:
        values: dict[str, float] = {}
        if change is not None:
            values["policy_kl"] = change.kl.mean().item()
            if approx_kl:
                values["approx_kl"] = k3(change.log_ratio).mean().item()
        ratios = self._ratios
        if change is not None and len(ratios) == 0:
            # one step on the whole batch (TRPOKL, REINFORCE, no minibatches added): the ratios after it
            ratios = RatioStatistics()
            ratios.add(th.exp(change.log_ratio), change.log_ratio)
        values.update(ratios.summary(clip_range))
        if self._gradients.count > 0:
            values["grad_norm"] = self._gradients.mean_norm()
            values["grad_snr"] = self._gradients.snr()
        return values


class FullDiagnostics(BasicDiagnostics):
    """``diagnostics="full"``: ``basic`` plus the maximum and a histogram (TensorBoard) of the per-state KL."""

    level: DiagnosticsLevel = "full"


def make_diagnostics(level: DiagnosticsLevel) -> Diagnostics:
    """
    :param level: ``"off"``, ``"basic"`` or ``"full"`` (checked by the constructors; this error is for ``load``)
    :return: the measurement object of that level
    """
    classes: dict[str, type[Diagnostics]] = {"off": Diagnostics, "basic": BasicDiagnostics, "full": FullDiagnostics}
    if level not in classes:
        raise ValueError(f"diagnostics must be one of {DIAGNOSTICS_LEVELS}, got {level!r}")
    return classes[level]()


def record_mean(logger: Logger, key: str, values: list[float]) -> None:
    """Record the mean of a list of scalars (nothing if the list is empty)."""
    if len(values) > 0:
        logger.record(key, float(np.mean(values)))


def record_means(logger: Logger, rows: list[dict[str, th.Tensor]], prefix: str = "train/") -> None:
    """Record under ``prefix`` the mean of each key over a list of dicts of scalar tensors (one dict per minibatch)."""
    for key in rows[0] if rows else ():
        record_mean(logger, prefix + key, [row[key].item() for row in rows])


class MeasuredAlgorithm(BaseAlgorithm):
    """
    Mixin of the four algorithms: the measurement object of their ``diagnostics`` level (rebuilt by ``_setup_model``,
    not saved), the KL method of ``policy_kl`` and the numerical guard (saved with the model, so its count goes on).
    """

    diagnostics: DiagnosticsLevel
    _measurement: Diagnostics
    _kl_method: Literal["analytic", "sample"]
    nonfinite_guard: NonFiniteGuard

    def _setup_measurement(self, kl_estimator: KLEstimator = "auto") -> None:
        """Call at the end of ``_setup_model``, once the policy exists."""
        # "analytic" (exact KL of SB3's distribution, all of SB3's have one) or "sample" (k3 on the batch actions)
        self._kl_method = resolve_kl_estimator(kl_estimator, self.policy.action_dist)  # type: ignore[arg-type]
        self._measurement = make_diagnostics(self.diagnostics)
        if not hasattr(self, "nonfinite_guard"):
            self.nonfinite_guard = NonFiniteGuard(type(self).__name__)

    def _measure_update(self, old_policy: OldPolicy | None) -> PolicyChange | None:
        """:return: what the update did to the policy, when the old policy was kept (diagnostics on, or PPOKL)"""
        return old_policy.measure(self.policy) if old_policy is not None else None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_measurement"]
