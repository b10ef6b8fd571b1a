"""One update loop for the PPO family (PPOClip, PPOKL).

``InstrumentedPPO.train`` is SB3 PPO's update, line for line in the order of its floating-point
operations and random draws (so PPOClip reproduces SB3 PPO's parameters), extended with the shared
diagnostics. Subclasses differ only in ``_policy_loss`` (the policy term of the loss) and
``_after_update`` (what happens once all epochs are done, e.g. adapting the KL coefficient).
"""

from __future__ import annotations

import inspect
from typing import Any


import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import Observations, flat_observations, iter_minibatches, policy_actions
from sb3_ppo_variants.common.diagnostics import (
    GradientStatistics,
    RatioStatistics,
    approx_kl_k3,
    check_diagnostics_level,
    flat_grad,
    record_dict,
    record_mean,
)
from sb3_ppo_variants.common.distributions import DistributionSnapshot, resolve_kl_estimator
from sb3_ppo_variants.common.guards import GuardedRollouts, nonfinite_step_skipped


# every argument of SB3 PPO's constructor, forwarded by name
_PPO_PARAMETERS = tuple(name for name in inspect.signature(PPO).parameters if name != "_init_setup_model")


class InstrumentedPPO(GuardedRollouts, PPO):
    """
    SB3 PPO's update loop with the package's diagnostics and a pluggable policy-loss term.
    Not meant to be used directly: see ``PPOClip`` and ``PPOKL``.

    Subclasses set ``self.diagnostics`` (``"off"``, ``"basic"``, ``"full"``) and ``self.kl_estimator``
    (``"auto"``, ``"analytic"``, ``"sample"``) before ``_setup_model``.
    """

    diagnostics: str
    kl_estimator: str
    #: whether the policy loss needs the old policy's distribution on the minibatch (PPOKL's penalty)
    _policy_loss_uses_old_distribution = False

    def _init_ppo(self, arguments: dict[str, Any], diagnostics: str, kl_estimator: str) -> None:
        """
        ``PPO.__init__`` with every PPO argument taken from the subclass's ``locals()`` (so the long
        argument list is written once, in each subclass signature), without building the model.

        :param arguments: ``locals()`` of the subclass ``__init__`` (extra names are ignored)
        :param diagnostics: ``"off"``, ``"basic"`` or ``"full"``
        :param kl_estimator: ``"auto"``, ``"analytic"`` or ``"sample"``
        """
        PPO.__init__(self, **{name: arguments[name] for name in _PPO_PARAMETERS}, _init_setup_model=False)
        self.diagnostics = check_diagnostics_level(diagnostics)
        self.kl_estimator = kl_estimator

    def _setup_model(self) -> None:
        check_diagnostics_level(self.diagnostics)
        # PPO._setup_model, except that clip_range may be None (no clipping, PPOKL's default)
        OnPolicyAlgorithm._setup_model(self)
        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, float | int):
                assert self.clip_range_vf > 0, "`clip_range_vf` must be positive, pass `None` to deactivate vf clipping"
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        # "analytic" or "sample": how KL(pi_old || pi_new) is computed for the penalty and for policy_kl
        self._kl_method = resolve_kl_estimator(self.kl_estimator, self.policy.action_dist)
        self._n_nonfinite_steps = 0

    # ----- hooks for subclasses -------------------------------------------------------------------

    def _policy_loss(
        self,
        advantages: th.Tensor,
        ratio: th.Tensor,
        log_ratio: th.Tensor,
        clip_range: float | None,
        old_distribution: DistributionSnapshot | None,
    ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """
        :param advantages: (normalised) advantages of the minibatch
        :param ratio: pi_new(a|s) / pi_old(a|s), with gradient
        :param log_ratio: its logarithm, with gradient
        :param clip_range: current clip range, None when clipping is off
        :param old_distribution: the old policy on the minibatch states (only if the subclass asked for it)
        :return: the policy loss to minimise and extra scalars to average and log under ``train/``
        """
        raise NotImplementedError

    def _after_update(self, policy_kl: float) -> None:
        """Called once per update, after every epoch, with the mean KL(pi_old || pi_new) over the rollout."""

    # ----- KL helpers ----------------------------------------------------------------------------

    def _minibatch_kl(self, old_distribution: DistributionSnapshot | None, log_ratio: th.Tensor) -> th.Tensor:
        """
        Mean KL(pi_old || pi_new) over a minibatch, differentiable w.r.t. the current policy: exact when
        the old distribution is available, the k3 estimator on the rollout actions otherwise.
        Must be called right after ``evaluate_actions`` (SB3 keeps the last distribution in ``policy.action_dist``).
        """
        if old_distribution is not None:
            return old_distribution.mean_kl_to(self.policy.action_dist)
        return approx_kl_k3(log_ratio)

    def _snapshot_policy(self, observations: Observations) -> DistributionSnapshot:
        """The current policy's action distribution on every rollout state (eval mode, no gradient)."""
        self.policy.set_training_mode(False)
        with th.no_grad():
            snapshot = DistributionSnapshot.from_distribution(self.policy.get_distribution(observations))
        self.policy.set_training_mode(True)
        return snapshot

    def _kl_per_state_after_update(self, old: DistributionSnapshot | None, observations: Observations) -> th.Tensor:
        """Per-state exact KL(pi_old || pi_new), or per-sample k3 terms when no analytic KL exists."""
        self.policy.set_training_mode(False)
        with th.no_grad():
            if old is not None:
                kl = old.kl_to(self.policy.get_distribution(observations))
            else:
                buffer = self.rollout_buffer
                actions = policy_actions(buffer.to_torch(buffer.actions), self.action_space)
                _, log_prob, _ = self.policy.evaluate_actions(observations, actions)
                log_ratio = log_prob - buffer.to_torch(buffer.log_probs).flatten()
                kl = th.expm1(log_ratio) - log_ratio
        self.policy.set_training_mode(True)
        return kl

    # ----- the update ----------------------------------------------------------------------------

    def train(self) -> None:  # noqa: C901
        """
        Update policy using the currently gathered rollout buffer (SB3 PPO's loop plus diagnostics).
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range (None: no clipping)
        clip_range = self.clip_range(self._current_progress_remaining) if self.clip_range is not None else None  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        instrumented = self.diagnostics != "off"
        full = self.diagnostics == "full"
        # The old policy over the whole rollout, once per update: needed by the penalty and by policy_kl
        observations = None
        old: DistributionSnapshot | None = None
        if instrumented or self._policy_loss_uses_old_distribution:
            observations = flat_observations(self.rollout_buffer)
            if self._kl_method == "analytic":
                old = self._snapshot_policy(observations)

        entropy_losses, pg_losses, value_losses, losses = [], [], [], []
        clip_fractions_all, approx_kl_divs = [], []
        extra_logs: dict[str, list[th.Tensor]] = {}
        ratio_stats = RatioStatistics()
        grad_stats = GradientStatistics()

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            # Do a complete pass on the rollout buffer
            for batch_indices, rollout_data in iter_minibatches(self.rollout_buffer, self.batch_size):
                actions = policy_actions(rollout_data.actions, self.action_space)

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                log_ratio = log_prob - rollout_data.old_log_prob
                ratio = th.exp(log_ratio)

                old_batch = old[batch_indices] if (old is not None and self._policy_loss_uses_old_distribution) else None
                policy_loss, extras = self._policy_loss(advantages, ratio, log_ratio, clip_range, old_batch)

                # Logging
                pg_losses.append(policy_loss.item())
                for key, value in extras.items():
                    extra_logs.setdefault(key, []).append(value.detach())
                if clip_range is not None:
                    # SB3's clip_fraction (below 1 - eps and above 1 + eps come from ratio_stats, at the end)
                    clip_fractions_all.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                if instrumented:
                    ratio_stats.add(ratio)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                if self.ent_coef != 0:
                    loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                else:
                    # SB3 adds 0 * entropy_loss: the same loss and gradients to the bit (adding exact zeros changes
                    # no float), minus a backward pass of zeros through the entropy
                    loss = policy_loss + self.vf_coef * value_loss
                losses.append(loss.item())

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    # SB3's expression of the k3 estimator (so train/approx_kl is SB3's number, to the bit;
                    # ratio is th.exp(log_ratio), already computed)
                    approx_kl_div = th.mean((ratio - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                if instrumented:
                    # before clipping: the raw gradient of this minibatch
                    gradient = flat_grad(self.policy.parameters())
                # Clip grad norm
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                # Numerical guard: never write non-finite weights, skip this minibatch instead
                if nonfinite_step_skipped(self, losses[-1], grad_norm, self.policy.optimizer):
                    continue
                if instrumented:
                    grad_stats.add(gradient, grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        policy_kl = float("nan")
        kl_per_state = None
        if observations is not None:
            kl_per_state = self._kl_per_state_after_update(old, observations)
            policy_kl = kl_per_state.mean().item()
        self._after_update(policy_kl)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs: SB3 PPO's keys (averaged over every minibatch of the update) ...
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        record_mean(self.logger, "train/clip_fraction", clip_fractions_all)
        record_mean(self.logger, "train/loss", losses)
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        for key, values_list in extra_logs.items():
            record_mean(self.logger, f"train/{key}", values_list)
        self.logger.record("train/nonfinite_steps", self._n_nonfinite_steps)

        # ... and the shared diagnostics vocabulary
        if instrumented:
            self.logger.record("train/policy_kl", policy_kl)
            record_dict(self.logger, ratio_stats.summary(clip_range))
            self.logger.record("train/grad_norm", grad_stats.mean_norm())
            self.logger.record("train/grad_snr", grad_stats.snr())
        if full and kl_per_state is not None:
            self.logger.record("train/policy_kl_max", kl_per_state.max().item())
            self.logger.record("train/policy_kl_hist", kl_per_state.detach().cpu(), exclude=("stdout", "log", "json", "csv"))
