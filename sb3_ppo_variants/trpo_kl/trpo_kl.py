import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import TRPO
from sb3_contrib.common.utils import conjugate_gradient_solver
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution, kl_divergence
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import explained_variance
from torch import nn
from torch.nn import functional as F

from sb3_ppo_variants.common.buffers import Observations, Samples
from sb3_ppo_variants.common.diagnostics import (
    DIAGNOSTICS_LEVELS,
    DiagnosticsLevel,
    GradientStatistics,
    MeasuredAlgorithm,
    OldPolicy,
    PolicyChange,
    measuring,
)
from sb3_ppo_variants.common.fast import FastPathAlgorithm
from sb3_ppo_variants.common.guards import GuardedRollouts
from sb3_ppo_variants.common.reference import (
    ReferenceRollouts,
    RefKLEstimator,
    RefKLPlacement,
    RefPolicy,
    RefVecNormalize,
    check_reference_arguments,
)
from sb3_ppo_variants.common.validation import check_bool, check_choice, check_trpo_arguments
from sb3_ppo_variants.trpo_kl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

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


def slice_observations(observations: Observations, index: slice) -> Observations:
    """:return: ``observations[index]``, key by key for Dict observations"""
    if isinstance(observations, dict):
        return {key: obs[index] for key, obs in observations.items()}
    return observations[index]


def sub_sample(rollout_data: Samples, factor: int) -> RolloutBufferSamples:
    """sb3-contrib's sub-sampling of the rollout (every ``factor``-th sample), also for Dict observations."""
    return RolloutBufferSamples(
        slice_observations(rollout_data.observations, slice(None, None, factor)),  # type: ignore[arg-type]
        rollout_data.actions[::factor],
        None,  # type: ignore[arg-type]  # old values, not used here
        rollout_data.old_log_prob[::factor],
        rollout_data.advantages[::factor],
        None,  # type: ignore[arg-type]  # returns, not used here
    )


@dataclass
class SearchDirection:
    """
    The natural-gradient direction of one TRPO step.

    :param direction: s, the conjugate-gradient solution of H s = g
    :param hessian_direction: H s (H including damping)
    :param max_step_size: sqrt(2 target_kl / s^T H s): the step length along s that reaches the trust-region boundary
        of the quadratic model of the KL
    """

    direction: th.Tensor
    hessian_direction: th.Tensor
    max_step_size: float


@dataclass
class LineSearchResult:
    """
    What sb3-contrib's backtracking line search did.

    :param is_success: whether a step was accepted (otherwise the parameters were restored)
    :param n_tries: steps tried (0 when the numerical guard skipped the policy step)
    :param coefficient: the backtrack coefficient alpha^i of the last tried step (NaN if none was tried)
    :param policy_objective: the surrogate after the update (before it when no step was accepted), as sb3-contrib logs it
    :param tried_objective: the surrogate at the last tried step (NaN if none was tried)
    :param tried_kl: the constraint's mean KL(pi_new || pi_old) at the last tried step (NaN if none was tried)
    """

    is_success: bool
    n_tries: int
    coefficient: float
    policy_objective: float
    tried_objective: float = float("nan")
    tried_kl: float = float("nan")

    @property
    def line_search_steps(self) -> int:
        """:return: backtracking steps: the tries before the accepted one, all the tries on failure"""
        return self.n_tries - 1 if self.is_success else self.n_tries

    @property
    def step_fraction(self) -> float:
        """:return: the accepted step as a fraction of the maximal step (the backtrack coefficient), 0 on failure"""
        return self.coefficient if self.is_success else 0.0


class TRPOKL(ReferenceRollouts, GuardedRollouts, FastPathAlgorithm, MeasuredAlgorithm, TRPO):
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
    :param ref_policy: the frozen reference policy of the KL term (fine-tuning, see docs/reference_policy.md): None (off,
        the default), a path to an SB3 .zip, a loaded SB3 model or policy, or ``"initial"`` (the policy at the first
        ``learn()``); its spaces and distribution family must be the policy's. Saved inside the model zip.
    :param ref_kl_coef: beta, the coefficient of the KL to the reference (>= 0; 0 with the fixed controller: no penalty)
    :param ref_kl_controller: ``"fixed"``, ``"adaptive"`` (PPO paper's rule) or ``"proportional"`` (Ziegler et al.):
        beta adapted once per update from ``train/ref_kl`` toward ``ref_kl_target``
    :param ref_kl_target: the KL to the reference the controller aims at (> 0; needed unless ``"fixed"``)
    :param ref_kl_horizon: proportional controller: gain n / horizon with n the samples of the update (Ziegler's and
        TRL's form, e.g. 10000); None: gain 0.1 per update
    :param ref_kl_placement: ``"reward"``: r_t - beta * k(log pi_old(a_t|s_t) - log pi_ref(a_t|s_t)) before the returns
        (RLHF); ``"loss"``: + beta * exact mean KL(pi_theta || pi_ref) in the loss (kickstarting, GRPO)
    :param ref_kl_estimator: k of the reward placement: ``"k1"`` (the log-ratio, RLHF's), ``"k3"``, ``"abs"``, ``"mse"``
    :param init_from_ref: False (own initialisation), True or ``"actor"`` (start the actor from the reference's
        weights, the critic fresh) or ``"actor_critic"`` (both); the networks must have the same shapes
    :param ref_vec_normalize: the reference's observation normalisation: None (the reference sees the policy's
        observations), ``"raw"`` (the raw observations) or a ``VecNormalize`` / the path of one saved with
        ``VecNormalize.save`` (the raw observations normalised with its frozen statistics)
    :param truncation_as_terminal: treat time-limit truncation as termination: no bootstrap with the value of the
        terminal observation (which SB3 adds on ``TimeLimit.truncated``); see ``sb3_ppo_variants.common.truncation``
    :param diagnostics: ``"off"`` (sb3-contrib TRPO's keys only, plus ``nonfinite_steps``), ``"basic"``
        (default: the trust-region and shared diagnostics; costs one extra forward pass over the rollout per
        update) or ``"full"`` (adds ``grad_snr``: one extra forward and backward pass per ``batch_size`` chunk
        of the rollout, costly); see docs/diagnostics.md
    :param fast: take the fast path where it applies (the same results, bit for bit, in less time; see
        docs/speed.md); ``False`` runs sb3-contrib's and SB3's code everywhere
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
        ref_policy: RefPolicy = None,
        ref_kl_coef: float = 0.0,
        ref_kl_controller: str = "fixed",
        ref_kl_target: float | None = None,
        ref_kl_horizon: int | None = None,
        ref_kl_placement: RefKLPlacement = "reward",
        ref_kl_estimator: RefKLEstimator = "k1",
        init_from_ref: bool | str = False,
        ref_vec_normalize: RefVecNormalize = None,
        truncation_as_terminal: bool = False,
        diagnostics: DiagnosticsLevel = "basic",
        fast: bool = True,
        _init_setup_model: bool = True,
    ):
        # every argument validated before anything is built (sb3-contrib only asserts a few)
        check_trpo_arguments(locals())
        check_choice("diagnostics", diagnostics, DIAGNOSTICS_LEVELS)
        check_bool("truncation_as_terminal", truncation_as_terminal)
        check_bool("fast", fast)
        check_reference_arguments(locals())
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
        self.diagnostics = diagnostics
        self.fast = fast
        self._init_reference(locals())
        self.truncation_as_terminal = truncation_as_terminal
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_measurement()
        self._setup_reference()

    # ----- the policy step -----------------------------------------------------------------------

    def _search_direction(
        self,
        hessian_vector_product_fn: Callable[..., th.Tensor],
        policy_objective: th.Tensor,
        policy_objective_gradients: th.Tensor,
    ) -> SearchDirection | None:
        """
        sb3-contrib's conjugate-gradient direction and maximal step length, in the same operations; None when the
        numerical guard skips the policy step (non-finite surrogate, gradient, direction or curvature; sb3-contrib
        would write NaN weights).
        """
        if self.nonfinite_guard.skipped("surrogate objective or its gradient", policy_objective, policy_objective_gradients):
            return None
        # Computing search direction
        search_direction = conjugate_gradient_solver(
            hessian_vector_product_fn,
            policy_objective_gradients,
            max_iter=self.cg_max_steps,
        )
        # H s (with damping): needed for the maximal step length, and gives the CG residual for free
        hessian_direction = hessian_vector_product_fn(search_direction, retain_graph=False)
        curvature = float(th.matmul(search_direction, hessian_direction))
        if self.nonfinite_guard.skipped("search direction or its curvature", search_direction, curvature) or curvature <= 0:
            return None
        # Maximal step length
        line_search_max_step_size = 2 * self.target_kl
        line_search_max_step_size /= curvature
        line_search_max_step_size = np.sqrt(line_search_max_step_size)
        return SearchDirection(search_direction, hessian_direction, line_search_max_step_size)

    def _line_search(
        self,
        actor_params: list[nn.Parameter],
        grad_shape: list[tuple[int, ...]],
        search: SearchDirection,
        rollout_data: Samples,
        actions: th.Tensor,
        advantages: th.Tensor,
        old_distribution: Distribution,
        policy_objective: th.Tensor,
    ) -> LineSearchResult:
        """
        sb3-contrib's backtracking line search: try theta + alpha^i * max_step * s for i = 0, 1, ... and accept
        the first step that improves the surrogate with mean KL(pi_new || pi_old) < target_kl; restore the
        parameters exactly if none does.
        """
        line_search_backtrack_coeff = 1.0
        original_actor_params = [param.detach().clone() for param in actor_params]

        is_line_search_success = False
        n_tries, tried_coefficient = 0, float("nan")
        with th.no_grad():
            # Line-search (backtracking)
            for _ in range(self.line_search_max_iter):
                start_idx = 0
                # Applying the scaled step direction
                for param, original_param, shape in zip(actor_params, original_actor_params, grad_shape, strict=True):
                    n_params = param.numel()
                    param.data = original_param.data + line_search_backtrack_coeff * search.max_step_size * search.direction[
                        start_idx : (start_idx + n_params)
                    ].view(shape)
                    start_idx += n_params

                # Recomputing the policy log-probabilities
                distribution = self.policy.get_distribution(rollout_data.observations)
                log_prob = distribution.log_prob(actions)

                # New policy objective
                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                new_policy_objective = (advantages * ratio).mean()
                # minus beta * KL(pi_theta || pi_ref) with ref_kl_placement="loss" (unchanged when the term is off)
                new_policy_objective = self._with_reference_penalty(new_policy_objective, distribution, sign=-1.0)

                # New KL-divergence
                kl_div = kl_divergence(distribution, old_distribution).mean()
                n_tries, tried_coefficient = n_tries + 1, line_search_backtrack_coeff

                # Constraint criteria:
                # we need to improve the surrogate policy objective
                # while being close enough (in term of kl div) to the old policy
                if (kl_div < self.target_kl) and (new_policy_objective > policy_objective):
                    is_line_search_success = True
                    break

                # Reducing step size if line-search wasn't successful
                line_search_backtrack_coeff *= self.line_search_shrinking_factor

            if not is_line_search_success:
                # If the line-search wasn't successful we revert to the original parameters
                for param, original_param in zip(actor_params, original_actor_params, strict=True):
                    param.data = original_param.data.clone()

        tried_objective = new_policy_objective.item()
        return LineSearchResult(
            is_success=is_line_search_success,
            n_tries=n_tries,
            coefficient=tried_coefficient,
            policy_objective=tried_objective if is_line_search_success else policy_objective.item(),
            tried_objective=tried_objective,
            tried_kl=kl_div.item(),
        )

    # ----- measurement ---------------------------------------------------------------------------

    def _old_policy(self, rollout_data: Samples, actions: th.Tensor) -> OldPolicy | None:
        """The policy before the step on the (sub-sampled) rollout, when diagnostics are on."""
        if not self._measurement.enabled:
            return None
        observations, old_log_prob = rollout_data.observations, rollout_data.old_log_prob
        return OldPolicy(self.policy, observations, actions, old_log_prob, self._kl_method, self._kernel())

    def _chunked_gradient_snr(
        self, actor_params: list[nn.Parameter], rollout_data: Samples, actions: th.Tensor, advantages: th.Tensor
    ) -> float:
        """
        Gradient signal-to-noise ratio of the surrogate (``diagnostics="full"``): split the batch, in order, into chunks
        of ``batch_size``, compute one surrogate gradient per chunk (extra forward and backward passes at the pre-step
        parameters, in eval mode with PyTorch's random state restored; ``.grad`` is not touched) and return
        ||mean g||^2 / mean ||g - mean g||^2.

        :return: the SNR, NaN with fewer than two chunks
        """
        stats = GradientStatistics()
        advantages = advantages.detach()
        with measuring(self.policy, no_grad=False):
            for start in range(0, len(advantages), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                distribution = self.policy.get_distribution(slice_observations(rollout_data.observations, chunk))
                ratio = th.exp(distribution.log_prob(actions[chunk]) - rollout_data.old_log_prob[chunk])
                grads = th.autograd.grad((advantages[chunk] * ratio).mean(), actor_params, allow_unused=True)
                gradient = th.cat(
                    [(th.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, actor_params, strict=True)]
                )
                stats.add(gradient, th.linalg.vector_norm(gradient))
        return stats.snr()

    def _trust_region_logs(
        self,
        policy_objective: th.Tensor,
        policy_objective_gradients: th.Tensor,
        search: SearchDirection | None,
        line_search: LineSearchResult,
        old_policy: OldPolicy,
        change: PolicyChange,
    ) -> dict[str, float]:
        """
        How the trust-region step was found (``diagnostics != "off"``): line-search steps, accepted step fraction,
        first-order expected vs actual improvement of the surrogate at the accepted (or last tried) step, CG residual,
        gradient norm, and the constraint's KL(pi_new || pi_old) measured after the step.
        """
        expected = actual = residual = float("nan")
        if search is not None:
            # g . delta_theta, with delta_theta = coeff * max_step * s, at the accepted (or last tried) step
            slope = float(policy_objective_gradients.double() @ search.direction.double())
            expected = line_search.coefficient * float(search.max_step_size) * slope
            actual = line_search.tried_objective - policy_objective.item()
            residual = cg_relative_residual(search.hessian_direction, policy_objective_gradients)
        assert old_policy.distribution is not None
        return {
            "line_search_steps": float(line_search.line_search_steps),
            "step_fraction": line_search.step_fraction,
            "expected_improvement": expected,
            "actual_improvement": actual,
            "improvement_ratio": actual / expected if expected != 0.0 and math.isfinite(expected) else float("nan"),
            "cg_residual": residual,
            "grad_norm": float(th.linalg.vector_norm(policy_objective_gradients.double())),
            "trust_region_kl": kl_divergence(change.distribution, old_policy.distribution).mean().item(),
        }

    # ----- the update ----------------------------------------------------------------------------

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer.
        (sb3-contrib TRPO's ``train``, with the numerical guard, the line search as a method, and the measurement calls.)
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)

        policy_objective_values = []
        kl_divergences = []
        line_search_results = []
        value_losses = []
        step_logs: dict[str, float] = {}
        change = None

        # This will only loop once (get all data in one go)
        for rollout_data in self.rollout_buffer.get(batch_size=None):
            # Optional: sub-sample data for faster computation
            if self.sub_sampling_factor > 1:
                rollout_data = sub_sample(rollout_data, self.sub_sampling_factor)

            actions = rollout_data.actions
            if isinstance(self.action_space, spaces.Discrete):
                # Convert discrete action from float to long
                actions = rollout_data.actions.long().flatten()

            # The policy before the step, for the diagnostics (eval mode, PyTorch's random state restored)
            old_policy = self._old_policy(rollout_data, actions)
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
            # minus beta * KL(pi_theta || pi_ref) with ref_kl_placement="loss" (unchanged when the term is off)
            self._reference_snapshot(rollout_data.observations)
            policy_objective = self._with_reference_penalty(policy_objective, distribution, sign=-1.0)

            # KL divergence
            kl_div = kl_divergence(distribution, old_distribution).mean()

            # Surrogate & KL gradient
            self.policy.optimizer.zero_grad()

            actor_params, policy_objective_gradients, grad_kl, grad_shape = self._compute_actor_grad(kl_div, policy_objective)
            grad_snr = (
                self._chunked_gradient_snr(actor_params, rollout_data, actions, advantages)
                if self._measurement.level == "full"
                else None
            )

            # Hessian-vector dot product function used in the conjugate gradient step
            hessian_vector_product_fn = partial(self.hessian_vector_product, actor_params, grad_kl)

            # Search direction and maximal step length (None: the numerical guard skipped the step)
            search = self._search_direction(hessian_vector_product_fn, policy_objective, policy_objective_gradients)
            if search is not None:
                line_search = self._line_search(
                    actor_params, grad_shape, search, rollout_data, actions, advantages, old_distribution, policy_objective
                )
            else:
                line_search = LineSearchResult(False, 0, float("nan"), policy_objective.item())

            line_search_results.append(line_search.is_success)
            policy_objective_values.append(line_search.policy_objective)
            # KL(pi_new || pi_old) of the last tried step (sb3-contrib logs 0.0 when the line search fails)
            kl_divergences.append(line_search.tried_kl)

            if old_policy is not None:
                change = old_policy.measure(self.policy)
                step_logs = self._trust_region_logs(
                    policy_objective, policy_objective_gradients, search, line_search, old_policy, change
                )
                if grad_snr is not None:
                    step_logs["grad_snr"] = grad_snr

        # Critic update (SB3's minibatches, forward pass and optimizer step, or the fast path's: the same arithmetic)
        critic_params = [p for p in self.policy.parameters() if not any(p is actor for actor in actor_params)]
        steps = self._update_steps(critic_params)
        steps.begin()
        for _ in range(self.n_critic_updates):
            for _, rollout_data in steps.minibatches(self.rollout_buffer, self.batch_size):
                values_pred = steps.predict_values(rollout_data.observations)
                value_loss = F.mse_loss(rollout_data.returns, values_pred.flatten())
                value_losses.append(value_loss.item())

                steps.zero_grad()
                value_loss.backward()
                # Removing gradients of parameters shared with the actor
                # otherwise it defeats the purposes of the KL constraint
                for param in actor_params:
                    param.grad = None
                # Numerical guard (not in sb3-contrib): a NaN return must not reach the critic's weights
                critic_grad_norm = steps.gradient_norm()
                if self.nonfinite_guard.skipped(
                    "value loss or gradient norm", value_losses[-1], critic_grad_norm, optimizer=self.policy.optimizer
                ):
                    continue
                steps.step()
        steps.end()

        self._n_updates += 1
        self._record_reference(self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs)
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/policy_objective", np.mean(policy_objective_values))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/kl_divergence_loss", np.mean(kl_divergences))
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/is_line_search_success", np.mean(line_search_results))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        # The package's keys: the guard, the trust-region step, and the shared diagnostics vocabulary
        self.logger.record("train/nonfinite_steps", self.nonfinite_guard.n_skipped)
        for key, value in step_logs.items():
            self.logger.record(f"train/{key}", value)
        self._measurement.record(self.logger, change, approx_kl=True)

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
