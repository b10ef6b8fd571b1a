"""One update loop for the PPO family (PPOClip, PPOKL).

``InstrumentedPPO.train`` is SB3 PPO's update, line for line in the order of its floating-point
operations and random draws (so PPOClip reproduces SB3 PPO's parameters), plus a few calls into the
measurement layer (``common/diagnostics.py``) and the numerical guard. Subclasses differ only in
``_policy_loss`` (the policy term of the loss) and ``_after_update`` (what happens once all epochs are
done, e.g. adapting the KL coefficient). Compare it with SB3's::

    sb3=$(python -c "import stable_baselines3.ppo.ppo as m; print(m.__file__)")
    sed -n '/^    def train(self)/,/^    def learn/p' "$sb3" > /tmp/sb3_train.py
    sed -n '/^    def train(self)/,$p' sb3_ppo_variants/common/ppo_family.py > /tmp/our_train.py
    git diff --no-index /tmp/sb3_train.py /tmp/our_train.py
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.utils import FloatSchedule, explained_variance
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import flat_observations, policy_actions
from sb3_ppo_variants.common.diagnostics import (
    DiagnosticsLevel,
    MeasuredAlgorithm,
    OldPolicy,
    PolicyChange,
    record_means,
)
from sb3_ppo_variants.common.distributions import KLEstimator
from sb3_ppo_variants.common.fast import FastPathAlgorithm, PolicyKernel
from sb3_ppo_variants.common.guards import GuardedRollouts
from sb3_ppo_variants.common.reference import ReferenceRollouts


def clipped_surrogate(advantages: th.Tensor, ratio: th.Tensor, clip_range: float) -> tuple[th.Tensor, dict[str, th.Tensor]]:
    """
    SB3 PPO's clipped surrogate objective (PPO paper eq. 7), the same operations in the same order.

    :param advantages: (normalised) advantages of the minibatch
    :param ratio: pi_new(a|s) / pi_old(a|s), with gradient
    :param clip_range: eps
    :return: mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) (to maximise), and SB3's ``clip_fraction`` of the minibatch
    """
    policy_loss_1 = advantages * ratio
    policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
    clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float())
    return th.min(policy_loss_1, policy_loss_2).mean(), {"clip_fraction": clip_fraction}


class InstrumentedPPO(ReferenceRollouts, GuardedRollouts, FastPathAlgorithm, MeasuredAlgorithm, PPO):
    """
    SB3 PPO's update loop with the package's measurement layer and a pluggable policy-loss term.
    Not meant to be used directly: see ``PPOClip`` and ``PPOKL``, which call ``PPO.__init__`` with every
    argument named, then set ``diagnostics`` and ``kl_estimator`` before ``_setup_model``.
    """

    diagnostics: DiagnosticsLevel
    kl_estimator: KLEstimator
    #: whether the policy loss needs the old policy's distribution on every minibatch (PPOKL's penalty)
    _policy_loss_uses_old_policy: ClassVar[bool] = False

    def _setup_model(self) -> None:
        # PPO._setup_model, except that clip_range may be None (no clipping, PPOKL's default)
        OnPolicyAlgorithm._setup_model(self)
        if self.clip_range is not None:
            self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, float | int):
                assert self.clip_range_vf > 0, "`clip_range_vf` must be positive, pass `None` to deactivate vf clipping"
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        # the KL of the penalty and of policy_kl, the diagnostics object, the numerical guard
        self._setup_measurement(self.kl_estimator)
        # the reference-policy term (off: reference is None)
        self._setup_reference()

    # ----- hooks for subclasses -------------------------------------------------------------------

    def _policy_loss(
        self,
        advantages: th.Tensor,
        ratio: th.Tensor,
        log_ratio: th.Tensor,
        clip_range: float | None,
        old_policy: OldPolicy | None,
        batch_indices: np.ndarray,
    ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """
        :param advantages: (normalised) advantages of the minibatch
        :param ratio: pi_new(a|s) / pi_old(a|s), with gradient
        :param log_ratio: its logarithm, with gradient
        :param clip_range: current clip range, None when clipping is off
        :param old_policy: the policy before the update on the whole rollout (None unless the subclass asks for it
            with ``_policy_loss_uses_old_policy`` or diagnostics are on); ``old_policy[batch_indices]`` is the minibatch
        :param batch_indices: the minibatch's indices in the (flattened) rollout buffer
        :return: the policy loss to minimise, and extra scalars (detached tensors) to average and log under ``train/``
        """
        raise NotImplementedError

    def _after_update(self, change: PolicyChange | None) -> None:
        """Called once per update, after every epoch, with what the update did to the policy (None if not measured)."""

    def _current_clip_range(self) -> float | None:
        """:return: the clip range of this update, None when clipping is off"""
        return None if self.clip_range is None else self.clip_range(self._current_progress_remaining)  # type: ignore[operator]

    def _old_policy(self, kernel: PolicyKernel | None = None) -> OldPolicy | None:
        """
        The policy before the update on every rollout state, when the loss or the diagnostics need it.

        :param kernel: the fast path's kernel for the forward passes (None: the policy's)
        """
        if not (self._measurement.enabled or self._policy_loss_uses_old_policy):
            return None
        buffer = self.rollout_buffer
        observations = flat_observations(buffer)  # first: it makes SB3 flatten the buffer's arrays
        # as SB3's _get_samples gives them: float32 (the buffer keeps the action space's dtype)
        actions = policy_actions(buffer.to_torch(buffer.actions.astype(np.float32, copy=False)), self.action_space)
        log_prob = buffer.to_torch(buffer.log_probs).flatten()
        return OldPolicy(self.policy, observations, actions, log_prob, self._kl_method, kernel)

    # ----- the update ----------------------------------------------------------------------------

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        (SB3 PPO's ``train``, with ``_policy_loss`` as the policy term, the measurement calls and the numerical guard.)
        """
        # SB3's minibatches, forward pass and optimisation step, or the fast path's (the same arithmetic)
        steps = self._update_steps()
        # Switch to train mode (this affects batch norm / dropout)
        steps.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range (None: no clipping)
        clip_range = self._current_clip_range()
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        losses, approx_kl_divs = [], []
        policy_loss_terms: list[dict[str, th.Tensor]] = []
        old_policy = self._old_policy(steps.kernel)
        self._measurement.begin_update(steps.plain)
        steps.begin()

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            # Do a complete pass on the rollout buffer (SB3's minibatches, with their indices)
            for batch_indices, rollout_data in steps.minibatches(self.rollout_buffer, self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = steps.evaluate_actions(
                    rollout_data.observations, actions, entropy_gradient=self.ent_coef != 0.0
                )
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                log_ratio = log_prob - rollout_data.old_log_prob
                ratio = th.exp(log_ratio)

                # the algorithm's policy loss (PPOClip: SB3's clipped surrogate)
                policy_loss, terms = self._policy_loss(advantages, ratio, log_ratio, clip_range, old_policy, batch_indices)

                # Logging
                pg_losses.append(policy_loss.item())
                policy_loss_terms.append(terms)

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

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                # + beta * KL(pi_theta || pi_ref) with ref_kl_placement="loss" (the same tensor when the term is off)
                loss = self._with_reference_penalty(loss, self.policy.action_dist, batch_indices)
                losses.append(loss.item())

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    # SB3's expression (ratio = th.exp(log_ratio)); logged as the mean over every epoch, not the last
                    approx_kl_div = th.mean((ratio - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                steps.zero_grad()
                loss.backward()
                # Clip grad norm
                grad_norm = steps.clip_grad_norm(self.max_grad_norm, keep_gradient=self._measurement.enabled)
                # Numerical guard: never write non-finite weights, skip this minibatch instead
                if self.nonfinite_guard.skipped(
                    "loss or gradient norm", losses[-1], grad_norm, optimizer=self.policy.optimizer
                ):
                    continue
                self._measurement.add_minibatch(ratio, steps.gradient, grad_norm, log_ratio)
                steps.step()

            self._n_updates += 1
            if not continue_training:
                break
        steps.end()

        # What the whole update did to the policy (policy_kl, ratios after it), then the algorithm's after-update step
        change = self._measure_update(old_policy)
        self._after_update(change)
        self._record_reference(self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs (SB3's keys; loss averaged over the minibatches, not the last one)
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/loss", np.mean(losses))
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if clip_range is not None:
            self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        # The package's keys: the algorithm's loss terms, the guard, and the shared diagnostics vocabulary
        record_means(self.logger, policy_loss_terms)  # clip_fraction (when clipping), the algorithm's own terms
        self.logger.record("train/nonfinite_steps", self.nonfinite_guard.n_skipped)
        self._measurement.record(self.logger, change, clip_range)
