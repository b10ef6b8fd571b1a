import copy
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution, kl_divergence
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance
from torch import nn
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import Observations, Samples, policy_actions
from sb3_ppo_variants.common.diagnostics import (
    GradientStatistics,
    RatioStatistics,
    approx_kl_k3,
    check_diagnostics_level,
    record_dict,
    record_mean,
)
from sb3_ppo_variants.trpo_kl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.common.guards import GuardedRollouts, nonfinite_step_skipped
from sb3_ppo_variants.common.validation import check_trpo_arguments

SelfTRPOKL = TypeVar("SelfTRPOKL", bound="TRPOKL")


def cg_relative_residual(hessian_vector_product: th.Tensor, gradient: th.Tensor) -> float:
    """
    Relative residual ||H x - g|| / ||g|| of an approximate solution x of H x = g
    (0: exact solution; 1: no better than x = 0). Computed in float64.

    :param hessian_vector_product: H x, with the same H (including damping) that the solver used
    :param gradient: the right-hand side g
    :return: the relative residual, NaN if g = 0
    """
    gradient_norm = float(th.linalg.vector_norm(gradient.double()))
    if gradient_norm == 0.0:
        return float("nan")
    return float(th.linalg.vector_norm(hessian_vector_product.double() - gradient.double())) / gradient_norm


def joint_kl(dist_true: Distribution, dist_pred: Distribution) -> th.Tensor:
    """
    Exact KL(dist_true || dist_pred) of the joint action distribution, per state: SB3's ``kl_divergence``
    keeps one column per independent action dimension (Box, MultiBinary, MultiDiscrete), summed here.

    :param dist_true: an SB3 distribution (e.g. the old policy on a batch of states)
    :param dist_pred: a distribution of the same type on the same states
    :return: tensor of shape (batch,)
    """
    kl = kl_divergence(dist_true, dist_pred)
    return kl.sum(dim=-1) if kl.ndim > 1 else kl


def slice_observations(observations: Observations, index: slice) -> Observations:
    """:return: ``observations[index]``, key by key for Dict observations"""
    if isinstance(observations, dict):
        return {key: obs[index] for key, obs in observations.items()}
    return observations[index]


@dataclass
class TrustRegionStep:
    """
    What one TRPO policy step did: the conjugate-gradient solve and the backtracking line search.
    One per update (TRPO takes a single step on the whole rollout); read by the logger.

    :param policy_objective: surrogate objective after the update (before it when the step was rejected),
        as sb3-contrib logs it
    :param is_success: whether the line search accepted a step
    :param is_skipped: whether the numerical guard skipped the step (non-finite surrogate, gradient or direction)
    :param line_search_steps: backtracking steps taken: tries before acceptance, ``line_search_max_iter`` on failure
    :param step_fraction: accepted step size as a fraction of the maximal step (the backtrack coefficient), 0 on failure
    :param expected_improvement: first-order prediction g . delta_theta of the surrogate's improvement at the
        accepted (or last tried) step
    :param actual_improvement: surrogate(theta + delta_theta) - surrogate(theta) at the same step
    :param last_tried_kl: mean KL(pi_new || pi_old) of the constraint at the accepted (or last tried) step
    :param cg_residual: ||H x - g|| / ||g|| of the conjugate-gradient direction x, H including damping
    :param grad_norm: norm of the gradient g of the surrogate objective w.r.t. the actor parameters
    :param grad_snr: signal-to-noise ratio of per-chunk surrogate gradients (``diagnostics="full"`` only)
    """

    policy_objective: float
    is_success: bool = False
    is_skipped: bool = False
    line_search_steps: int = 0
    step_fraction: float = 0.0
    expected_improvement: float = float("nan")
    actual_improvement: float = float("nan")
    last_tried_kl: float = float("nan")
    cg_residual: float = float("nan")
    grad_norm: float = float("nan")
    grad_snr: float = float("nan")

    @property
    def improvement_ratio(self) -> float:
        """:return: actual / expected improvement (1: the linear model was exact), NaN if expected is 0 or unknown"""
        if self.expected_improvement == 0.0 or not math.isfinite(self.expected_improvement):
            return float("nan")
        return self.actual_improvement / self.expected_improvement

    def diagnostics(self) -> dict[str, float]:
        """:return: the trust-region keys logged under ``train/`` with ``diagnostics != "off"``"""
        return {
            "line_search_steps": float(self.line_search_steps),
            "step_fraction": self.step_fraction,
            "expected_improvement": self.expected_improvement,
            "actual_improvement": self.actual_improvement,
            "improvement_ratio": self.improvement_ratio,
            "cg_residual": self.cg_residual,
            "grad_norm": self.grad_norm,
        }


class TRPOKL(GuardedRollouts, TRPO):
    """
    Trust Region Policy Optimization (TRPO), KL trust region, instrumented.

    The same maths, constructor and defaults as ``sb3_contrib.TRPO`` (with the same seed it learns the same
    parameters): the natural gradient direction from conjugate gradient on the Fisher-vector product of the
    KL, scaled to the trust-region boundary KL = ``target_kl``, then a backtracking line search that
    requires the surrogate to improve and the mean KL(pi_new || pi_old) to stay below ``target_kl``;
    the critic is then fitted separately with Adam. On top of it, the package's diagnostics of the
    trust-region step (line-search steps, accepted step fraction, expected vs actual improvement, CG
    residual, KL in both directions) and the shared vocabulary (exact ``policy_kl``, k3 ``approx_kl``,
    importance-ratio statistics, effective sample size, gradient norm and signal-to-noise).

    Two deliberate differences with sb3-contrib, neither of which changes the parameters:
    ``train/kl_divergence_loss`` is the constraint's KL of the *last tried* step (sb3-contrib logs 0.0
    when the line search fails, although no step of KL 0 was tried), and a numerical guard skips the
    policy step (parameters unchanged, ``train/nonfinite_steps`` + 1, a warning) when the surrogate, its
    gradient, the search direction or its curvature is not finite (sb3-contrib would write NaN weights).
    Sub-sampling (``sub_sampling_factor > 1``) also works with Dict observations.

    Paper: https://arxiv.org/abs/1502.05477
    Code: the update is sb3-contrib's TRPO (https://github.com/Stable-Baselines-Team/stable-baselines3-contrib),
    itself from OpenAI Spinning Up (https://github.com/openai/spinningup/) and Stable Baselines
    (https://github.com/hill-a/stable-baselines)

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate for the value function, it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
        NOTE: n_steps * n_envs must be greater than 1 (because of the advantage normalization)
        See https://github.com/pytorch/pytorch/issues/29372
    :param batch_size: Minibatch size for the value function (and the chunk size of ``grad_snr``)
    :param gamma: Discount factor
    :param cg_max_steps: maximum number of steps in the Conjugate Gradient algorithm
        for computing the Hessian vector product
    :param cg_damping: damping in the Hessian vector product computation
    :param line_search_shrinking_factor: step-size reduction factor for the line-search
        (i.e., ``theta_new = theta + alpha^i * step``)
    :param line_search_max_iter: maximum number of iteration
        for the backtracking line-search
    :param n_critic_updates: number of critic updates per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize or not the advantage
    :param target_kl: Target Kullback-Leibler divergence between updates (the trust-region radius on the
        mean KL(pi_new || pi_old), averaged over states and, for Box/MultiBinary actions, over action dimensions,
        as in sb3-contrib). Should be small for stability. Values like 0.01, 0.05.
    :param sub_sampling_factor: Sub-sample the batch to make computation faster
        see p40-42 of John Schulman thesis http://joschu.net/docs/thesis.pdf
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param diagnostics: ``"off"`` (sb3-contrib TRPO's keys only, plus ``nonfinite_steps``), ``"basic"``
        (default: the trust-region and shared diagnostics; costs one extra forward pass over the rollout per
        update) or ``"full"`` (adds ``grad_snr``: one extra forward and backward pass per ``batch_size`` chunk
        of the rollout, costly); see the README's metrics table
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        diagnostics: str = "basic",
        _init_setup_model: bool = True,
    ):
        # every argument validated before anything is built (sb3-contrib only asserts a few)
        check_trpo_arguments(locals())
        self.diagnostics = check_diagnostics_level(diagnostics)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            gamma=gamma,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            line_search_shrinking_factor=line_search_shrinking_factor,
            line_search_max_iter=line_search_max_iter,
            n_critic_updates=n_critic_updates,
            gae_lambda=gae_lambda,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            normalize_advantage=normalize_advantage,
            target_kl=target_kl,
            sub_sampling_factor=sub_sampling_factor,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        check_diagnostics_level(self.diagnostics)
        super()._setup_model()
        self._n_nonfinite_steps = 0

    # ----- helpers -------------------------------------------------------------------------------

    def _fork_rng(self) -> Any:
        """
        Context manager restoring PyTorch's random state on exit: the extra forward passes of the
        diagnostics then cannot consume random numbers, even for a custom policy with dropout.
        """
        devices = []
        if self.device.type == "cuda":
            devices = [self.device.index if self.device.index is not None else th.cuda.current_device()]
        return th.random.fork_rng(devices=devices)

    def _skip_nonfinite(self, step: TrustRegionStep, what: str) -> TrustRegionStep:
        """Numerical guard: count and report a policy step that is skipped (the actor is left unchanged)."""
        self._n_nonfinite_steps += 1
        warnings.warn(f"{type(self).__name__}: non-finite {what}, policy step skipped (actor parameters unchanged)")
        step.is_skipped = True
        return step

    def _chunked_gradient_snr(
        self,
        actor_params: list[nn.Parameter],
        rollout_data: Samples,
        actions: th.Tensor,
        advantages: th.Tensor,
    ) -> float:
        """
        Gradient signal-to-noise ratio of the surrogate: split the batch, in order, into chunks of
        ``batch_size``, compute one surrogate gradient per chunk (extra forward and backward passes, at the
        pre-step parameters; ``.grad`` is not touched) and return ||mean g||^2 / mean ||g - mean g||^2.

        :return: the SNR, NaN with fewer than two chunks
        """
        stats = GradientStatistics()
        n_samples = len(advantages)
        advantages = advantages.detach()
        with self._fork_rng():
            for start in range(0, n_samples, self.batch_size):
                chunk = slice(start, start + self.batch_size)
                distribution = self.policy.get_distribution(slice_observations(rollout_data.observations, chunk))
                ratio = th.exp(distribution.log_prob(actions[chunk]) - rollout_data.old_log_prob[chunk])
                objective = (advantages[chunk] * ratio).mean()
                grads = th.autograd.grad(objective, actor_params, allow_unused=True)
                stats.add(
                    th.cat(
                        [
                            (grad if grad is not None else th.zeros_like(param)).reshape(-1)
                            for grad, param in zip(grads, actor_params, strict=True)
                        ]
                    )
                )
        return stats.snr()

    def _measure_step(self, rollout_data: Samples, actions: th.Tensor, old_distribution: Distribution) -> dict[str, float]:
        """
        One extra forward pass at the parameters left by the update (accepted step, or the restored
        parameters when the line search failed): what the policy step really did.

        :return: ``policy_kl`` (exact KL(pi_old || pi_new), summed over action dimensions), ``trust_region_kl``
            (the constraint's KL(pi_new || pi_old), sb3-contrib's convention), ``approx_kl`` (k3 estimator on the
            rollout actions) and the importance-ratio statistics with the effective sample size
        """
        with th.no_grad(), self._fork_rng():
            distribution = self.policy.get_distribution(rollout_data.observations)
            log_ratio = distribution.log_prob(actions) - rollout_data.old_log_prob
            ratio_stats = RatioStatistics()
            ratio_stats.add(th.exp(log_ratio))
            return {
                "policy_kl": joint_kl(old_distribution, distribution).mean().item(),
                "trust_region_kl": kl_divergence(distribution, old_distribution).mean().item(),
                "approx_kl": approx_kl_k3(log_ratio).item(),
                **ratio_stats.summary(),
            }

    # ----- the update ----------------------------------------------------------------------------

    def _policy_step(
        self, rollout_data: Samples, instrumented: bool
    ) -> tuple[TrustRegionStep, list[nn.Parameter], dict[str, float]]:
        """
        One TRPO policy step on the whole (sub-sampled) rollout, the operations of sb3-contrib's ``train``
        in the same order, plus diagnostics that only read tensors.

        :param rollout_data: the rollout samples
        :param instrumented: whether to compute the diagnostics (``diagnostics != "off"``)
        :return: the step's summary, the actor parameters, and the post-step measurements (empty if not instrumented)
        """
        actions = policy_actions(rollout_data.actions, self.action_space)

        with th.no_grad():
            # Note: is copy enough, no need for deepcopy?
            # If using gSDE and deepcopy, we need to use `old_distribution.distribution`
            # directly to avoid PyTorch errors.
            old_distribution = copy.copy(self.policy.get_distribution(rollout_data.observations))

        distribution = self.policy.get_distribution(rollout_data.observations)
        log_prob = distribution.log_prob(actions)

        advantages = rollout_data.advantages
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (rollout_data.advantages.std() + 1e-8)

        # ratio between old and new policy, should be one at the first iteration
        ratio = th.exp(log_prob - rollout_data.old_log_prob)

        # surrogate policy objective
        policy_objective = (advantages * ratio).mean()

        # KL divergence KL(pi_new || pi_old), the trust-region constraint (sb3-contrib's direction)
        kl_div = kl_divergence(distribution, old_distribution).mean()

        # Surrogate & KL gradient
        self.policy.optimizer.zero_grad()

        actor_params, policy_objective_gradients, grad_kl, grad_shape = self._compute_actor_grad(kl_div, policy_objective)

        step = TrustRegionStep(policy_objective=policy_objective.item())
        if instrumented:
            step.grad_norm = float(th.linalg.vector_norm(policy_objective_gradients.double()))
        if self.diagnostics == "full":
            # after kl_div: the extra forward passes overwrite the policy's (shared) distribution object
            step.grad_snr = self._chunked_gradient_snr(actor_params, rollout_data, actions, advantages)

        measure = partial(self._measure_step, rollout_data, actions, old_distribution) if instrumented else dict
        if not (th.isfinite(policy_objective) and th.isfinite(policy_objective_gradients).all()):
            return self._skip_nonfinite(step, "surrogate objective or gradient"), actor_params, measure()

        # Hessian-vector dot product function used in the conjugate gradient step
        hessian_vector_product_fn = partial(self.hessian_vector_product, actor_params, grad_kl)

        # Computing search direction
        search_direction = conjugate_gradient_solver(
            hessian_vector_product_fn,
            policy_objective_gradients,
            max_iter=self.cg_max_steps,
        )

        # H x (with damping): needed for the maximal step length, and gives the CG residual for free
        hessian_direction_product = hessian_vector_product_fn(search_direction, retain_graph=False)
        direction_curvature = float(th.matmul(search_direction, hessian_direction_product))
        if not (th.isfinite(search_direction).all() and math.isfinite(direction_curvature) and direction_curvature > 0):
            return self._skip_nonfinite(step, "search direction or curvature"), actor_params, measure()
        if instrumented:
            step.cg_residual = cg_relative_residual(hessian_direction_product, policy_objective_gradients)

        # Maximal step length: 1/2 s^T H s = target_kl along the direction s (quadratic model of the KL)
        line_search_max_step_size = 2 * self.target_kl
        line_search_max_step_size /= direction_curvature
        line_search_max_step_size = np.sqrt(line_search_max_step_size)

        last_coeff = self._line_search(
            step,
            actor_params,
            grad_shape,
            search_direction,
            line_search_max_step_size,
            rollout_data,
            actions,
            advantages,
            old_distribution,
            policy_objective,
        )
        if instrumented:
            # g . delta_theta, with delta_theta = coeff * max_step * s, at the accepted (or last tried) step
            step.expected_improvement = (
                last_coeff
                * float(line_search_max_step_size)
                * float(policy_objective_gradients.double() @ search_direction.double())
            )
        return step, actor_params, measure()

    def _line_search(
        self,
        step: TrustRegionStep,
        actor_params: list[nn.Parameter],
        grad_shape: list[tuple[int, ...]],
        search_direction: th.Tensor,
        line_search_max_step_size: float,
        rollout_data: Samples,
        actions: th.Tensor,
        advantages: th.Tensor,
        old_distribution: Distribution,
        policy_objective: th.Tensor,
    ) -> float:
        """
        sb3-contrib's backtracking line search: try theta + alpha^i * max_step * s for i = 0, 1, ... and accept
        the first step that improves the surrogate with mean KL(pi_new || pi_old) < target_kl; restore the
        parameters exactly if none does. Fills ``step``.

        :return: the backtrack coefficient alpha^i of the last tried step (NaN if nothing was tried)
        """
        line_search_backtrack_coeff = 1.0
        original_actor_params = [param.detach().clone() for param in actor_params]

        is_line_search_success = False
        n_tries, last_coeff = 0, float("nan")
        old_objective = policy_objective.item()
        with th.no_grad():
            # Line-search (backtracking)
            for _ in range(self.line_search_max_iter):
                start_idx = 0
                # Applying the scaled step direction
                for param, original_param, shape in zip(actor_params, original_actor_params, grad_shape, strict=True):
                    n_params = param.numel()
                    param.data = (
                        original_param.data
                        + line_search_backtrack_coeff
                        * line_search_max_step_size
                        * search_direction[start_idx : (start_idx + n_params)].view(shape)
                    )
                    start_idx += n_params

                # Recomputing the policy log-probabilities
                distribution = self.policy.get_distribution(rollout_data.observations)
                log_prob = distribution.log_prob(actions)

                # New policy objective
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                new_policy_objective = (advantages * ratio).mean()

                # New KL-divergence
                kl_div = kl_divergence(distribution, old_distribution).mean()

                n_tries += 1
                last_coeff = line_search_backtrack_coeff
                step.actual_improvement = new_policy_objective.item() - old_objective
                step.last_tried_kl = kl_div.item()

                # Constraint criteria:
                # we need to improve the surrogate policy objective
                # while being close enough (in term of kl div) to the old policy
                if (kl_div < self.target_kl) and (new_policy_objective > policy_objective):
                    is_line_search_success = True
                    break

                # Reducing step size if line-search wasn't successful
                line_search_backtrack_coeff *= self.line_search_shrinking_factor

            step.is_success = is_line_search_success
            if not is_line_search_success:
                # If the line-search wasn't successful we revert to the original parameters
                for param, original_param in zip(actor_params, original_actor_params, strict=True):
                    param.data = original_param.data.clone()
                step.line_search_steps = n_tries
                step.step_fraction = 0.0
            else:
                step.policy_objective = new_policy_objective.item()
                step.line_search_steps = n_tries - 1
                step.step_fraction = line_search_backtrack_coeff
        return last_coeff

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer (sb3-contrib TRPO's update plus diagnostics).
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        instrumented = self.diagnostics != "off"

        policy_objective_values = []
        kl_divergences = []
        line_search_results = []
        value_losses = []
        steps: list[TrustRegionStep] = []
        measurements: list[dict[str, float]] = []
        actor_params: list[nn.Parameter] = []

        # This will only loop once (get all data in one go)
        for rollout_data in self.rollout_buffer.get(batch_size=None):
            # Optional: sub-sample data for faster computation
            if self.sub_sampling_factor > 1:
                rollout_data = RolloutBufferSamples(
                    slice_observations(rollout_data.observations, slice(None, None, self.sub_sampling_factor)),  # type: ignore[arg-type]
                    rollout_data.actions[:: self.sub_sampling_factor],
                    None,  # type: ignore[arg-type]  # old values, not used here
                    rollout_data.old_log_prob[:: self.sub_sampling_factor],
                    rollout_data.advantages[:: self.sub_sampling_factor],
                    None,  # type: ignore[arg-type]  # returns, not used here
                )

            step, actor_params, measured = self._policy_step(rollout_data, instrumented)
            steps.append(step)
            measurements.append(measured)
            line_search_results.append(step.is_success)
            policy_objective_values.append(step.policy_objective)
            # KL(pi_new || pi_old) of the last tried step (sb3-contrib logs 0.0 when the line search fails)
            kl_divergences.append(step.last_tried_kl)

        # Critic update
        for _ in range(self.n_critic_updates):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                values_pred = self.policy.predict_values(rollout_data.observations)
                value_loss = F.mse_loss(rollout_data.returns, values_pred.flatten())
                value_losses.append(value_loss.item())

                self.policy.optimizer.zero_grad()
                value_loss.backward()
                # Removing gradients of parameters shared with the actor
                # otherwise it defeats the purposes of the KL constraint
                for param in actor_params:
                    param.grad = None
                # Numerical guard (not in sb3-contrib): a NaN return must not reach the critic's weights
                if nonfinite_step_skipped(self, value_loss, value_loss.detach(), self.policy.optimizer):
                    continue
                self.policy.optimizer.step()

        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs: sb3-contrib TRPO's keys ...
        self.logger.record("train/policy_objective", np.mean(policy_objective_values))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/kl_divergence_loss", np.mean(kl_divergences))
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/is_line_search_success", np.mean(line_search_results))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/nonfinite_steps", self._n_nonfinite_steps)

        # ... and the trust-region and shared diagnostics (one policy step per update: means of one value)
        if instrumented:
            for key in steps[0].diagnostics():
                record_mean(self.logger, f"train/{key}", [step.diagnostics()[key] for step in steps])
            for key in measurements[0]:
                record_mean(self.logger, f"train/{key}", [measured[key] for measured in measurements])
        if self.diagnostics == "full":
            record_dict(self.logger, {"grad_snr": float(np.mean([step.grad_snr for step in steps]))})

    def learn(
        self: SelfTRPOKL,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPOKL",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPOKL:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
