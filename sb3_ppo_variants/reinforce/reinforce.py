from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor, update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

from sb3_ppo_variants.common.diagnostics import (
    DIAGNOSTICS_LEVELS,
    DiagnosticsLevel,
    MeasuredAlgorithm,
    OldPolicy,
    RatioStatistics,
    measuring,
)
from sb3_ppo_variants.common.fast import FastPathAlgorithm, PolicyKernel
from sb3_ppo_variants.common.guards import nonfinite_observation_guard
from sb3_ppo_variants.common.reference import (
    ReferenceAlgorithm,
    RefKLEstimator,
    RefKLPlacement,
    RefPolicy,
    RefVecNormalize,
    check_reference_arguments,
)
from sb3_ppo_variants.common.validation import check_bool, check_choice, check_float, check_int, check_schedule
from sb3_ppo_variants.reinforce.baselines import (
    BASELINES,
    Baseline,
    BaselineName,
    PolicyGradient,
    PolicyGradientBatch,
    ValueBaseline,
    actor_parameters,
    covariance_trace,
    discounted_returns,
    importance_weights,
    make_baseline,
    per_episode_gradients,
    value_parameters,
    weighted_returns,
)
from sb3_ppo_variants.reinforce.episodes import EpisodeBatch, EpisodeBuffer, TensorObservation
from sb3_ppo_variants.reinforce.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfREINFORCE = TypeVar("SelfREINFORCE", bound="REINFORCE")

OffPolicyCorrection = Literal["none", "importance", "sync"]
OFF_POLICY_CORRECTIONS: tuple[OffPolicyCorrection, ...] = ("none", "importance", "sync")


def check_reinforce_arguments(kwargs: dict[str, Any]) -> None:
    """
    Validate REINFORCE's constructor arguments (``TypeError``/``ValueError`` naming the argument and the allowed values).

    :param kwargs: the constructor's arguments by name (``locals()`` at the top of ``__init__``)
    """
    check_choice("baseline", kwargs["baseline"], BASELINES)
    n_steps, n_episodes = kwargs["n_steps"], kwargs["n_episodes"]
    if (n_steps is None) == (n_episodes is None):
        raise ValueError(
            "set exactly one of n_steps (transitions of finished episodes per update) and n_episodes "
            f"(finished episodes per update), the other to None; got n_steps={n_steps!r}, n_episodes={n_episodes!r}"
        )
    check_int("n_steps", n_steps, allow_none=True)
    check_int("n_episodes", n_episodes, allow_none=True)
    check_float("gamma", kwargs["gamma"], 0.0, 1.0, low_open=True)
    check_bool("reward_to_go", kwargs["reward_to_go"])
    check_bool("normalize_advantage", kwargs["normalize_advantage"])
    check_choice("off_policy_correction", kwargs["off_policy_correction"], OFF_POLICY_CORRECTIONS)
    check_bool("truncation_as_terminal", kwargs["truncation_as_terminal"])
    check_schedule("learning_rate", kwargs["learning_rate"])
    check_schedule("value_learning_rate", kwargs["value_learning_rate"])
    check_int("n_value_epochs", kwargs["n_value_epochs"])
    check_int("value_batch_size", kwargs["value_batch_size"], allow_none=True)
    check_float("ent_coef", kwargs["ent_coef"])
    check_float("max_grad_norm", kwargs["max_grad_norm"], low=0.0, low_open=True, allow_none=True, allow_inf=True)
    check_bool("use_sde", kwargs["use_sde"])
    check_int("sde_sample_freq", kwargs["sde_sample_freq"], minimum=-1)
    check_int("stats_window_size", kwargs["stats_window_size"])
    check_int("verbose", kwargs["verbose"], minimum=0)
    check_int("seed", kwargs["seed"], minimum=0, allow_none=True)
    check_choice("diagnostics", kwargs["diagnostics"], DIAGNOSTICS_LEVELS)
    check_bool("fast", kwargs["fast"])


class REINFORCE(ReferenceAlgorithm, FastPathAlgorithm, MeasuredAlgorithm, OnPolicyAlgorithm):
    """
    REINFORCE: Monte-Carlo policy gradient on complete episodes (Williams 1992), with the baselines of the
    variance-reduction literature: none, batch mean, learned state value, and the variance-optimal constant.

    One update = one gradient step on a batch of *finished* episodes: ghat = (1/N) sum_i sum_t
    grad log pi(a_t|s_t) (target_t - b), target_t = reward-to-go G_t or the episode return R(tau).
    Returns are never bootstrapped at a batch boundary: an update waits until enough episodes have finished.
    Episodes still running on other environments then either carry over to the next update, their first steps
    sampled by older policies (``off_policy_correction="none"``: used as they are; ``"importance"``: re-weighted by
    per-decision importance weights), or are run to their end by the same policy before the update (``"sync"``).

    Time limits: an episode cut by a time limit (``TimeLimit.truncated``) is bootstrapped with
    gamma^(T-t) V(s_T) when ``baseline="value"`` and not ``truncation_as_terminal`` (V evaluated before this
    update's fit); with the other
    baselines no value exists and the truncation is treated as the end of the episode (the usual REINFORCE
    behaviour: an agent whose state lacks the time sees a terminal state). V is always regressed on the
    bootstrapped reward-to-go G_t, a true state value, also with ``reward_to_go=False`` (whose targets are then
    the bootstrapped episode return G_0 at every step, and whose baseline is V(s_t)).

    The baselines and the exact estimators are documented in ``sb3_ppo_variants.reinforce.baselines``.
    ``train/grad_variance`` is the trace of the sample covariance of the per-episode estimates
    ghat_i = sum_t grad log pi(a_t|s_t) A_t of the update (policy-gradient term only, after the baseline and any
    advantage normalisation); the variance of the batch gradient ghat is grad_variance / N.

    Paper: Williams (1992), "Simple statistical gradient-following algorithms for connectionist reinforcement
    learning", https://doi.org/10.1007/BF00992696. Optimal baseline: Greensmith, Bartlett & Baxter (2004),
    https://jmlr.org/papers/v5/greensmith04a.html; Peters & Schaal (2008), https://doi.org/10.1016/j.neunet.2008.02.003
    Code: the collection loop and class skeleton follow Stable-Baselines3's A2C/OnPolicyAlgorithm
    (https://github.com/DLR-RM/stable-baselines3); the episode buffer and estimators are this package's.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The policy's learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: Update once at least this many transitions of finished episodes were collected (summed over
        environments). Exactly one of ``n_steps`` and ``n_episodes`` must be set, the other ``None``.
    :param n_episodes: Update once at least this many episodes have finished (summed over environments)
    :param gamma: Discount factor, in (0, 1]
    :param reward_to_go: True: weight each score by the discounted reward-to-go G_t (causality);
        False: by the discounted whole-episode return R(tau)
    :param baseline: ``"none"``, ``"mean"`` (leave-one-episode-out batch mean of the targets over steps),
        ``"value"`` (learned V(s), regressed on the Monte-Carlo targets), ``"optimal"``
        (variance-minimising constant per parameter, from per-episode gradients), ``"rloo"`` (leave-one-out mean of
        the other episodes' returns, each episode once), ``"rloo_std"`` (``"rloo"`` divided by the other episodes'
        return std, GRPO-style) or ``"time"`` (leave-one-out mean of the targets at the same time index)
    :param normalize_advantage: Whiten the advantages over the batch (REINFORCE++-style: subtract the batch mean,
        divide by the std; the mean subtraction acts as an extra batch-mean baseline). With ``baseline="optimal"``
        the targets are only divided by their std (the baseline already centres the estimate).
    :param off_policy_correction: what happens to the episodes unfinished at an update with several environments:
        ``"none"`` (carried over, their first steps used as sampled by the older policy), ``"importance"`` (carried
        over and re-weighted by per-decision importance weights pi/mu, from log-probabilities stored when sampled)
        or ``"sync"`` (run to their end by the same policy before the update, the other environments' new steps
        dropped, then every environment reset: every batch on-policy, at the cost of the dropped steps). Default
        ``"sync"``: in the variance experiment (docs/benchmarks.md) ``"none"`` is biased (z = 8) on CartPole-v1, and
        ``"importance"`` is unbiased but has 6.5x its variance, ``"sync"`` neither, for 1.3 % of the steps dropped
    :param truncation_as_terminal: treat a time-limit truncation as the end of the episode (no bootstrap with
        V(s_T), also with ``baseline="value"``), as if the episode had terminated
    :param ent_coef: Entropy coefficient (entropy bonus added to the policy loss)
    :param max_grad_norm: Clip the policy gradient to this global norm (None: no clipping)
    :param value_learning_rate: Learning rate of the value baseline's optimiser (float or schedule)
    :param n_value_epochs: Passes over the batch of the value regression per update
    :param value_batch_size: Minibatch size of the value regression (None: whole batch)
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per collection)
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
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
    :param diagnostics: ``"off"`` (losses and baseline only), ``"basic"`` (default: the shared diagnostics, cheap)
        or ``"full"`` (adds ``grad_variance``, which needs per-episode gradients, and the per-state KL maximum;
        with ``baseline="optimal"`` ``grad_variance`` is free and logged from ``"basic"`` on); see docs/diagnostics.md
    :param fast: draw the collection's actions and run the value regression on the fast path where it applies (the same
        results, bit for bit, in less time; see docs/speed.md); ``False`` runs SB3's code
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: ActorCriticPolicy
    rollout_buffer: EpisodeBuffer  # type: ignore[assignment]  # complete episodes instead of a fixed-size block

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int | None = 2048,
        n_episodes: int | None = None,
        gamma: float = 0.99,
        reward_to_go: bool = True,
        baseline: BaselineName = "value",
        normalize_advantage: bool = False,
        off_policy_correction: OffPolicyCorrection = "sync",
        truncation_as_terminal: bool = False,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = None,
        value_learning_rate: float | Schedule = 1e-3,
        n_value_epochs: int = 5,
        value_batch_size: int | None = 64,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
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
        diagnostics: DiagnosticsLevel = "basic",
        fast: bool = True,
        _init_setup_model: bool = True,
    ):
        # every argument is checked before the environment or a network is built
        check_reinforce_arguments(locals())
        check_reference_arguments(locals())
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,  # type: ignore[arg-type]
            gamma=gamma,
            gae_lambda=1.0,  # Monte-Carlo returns, no GAE
            ent_coef=ent_coef,
            vf_coef=0.0,  # the value baseline is optimised separately
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(
                spaces.Box,
                spaces.Discrete,
                spaces.MultiDiscrete,
                spaces.MultiBinary,
            ),
        )
        self.n_episodes = n_episodes
        self.reward_to_go = reward_to_go
        self.baseline = baseline
        self.normalize_advantage = normalize_advantage
        self.off_policy_correction = off_policy_correction
        self.truncation_as_terminal = truncation_as_terminal
        self.value_learning_rate = value_learning_rate
        self.n_value_epochs = n_value_epochs
        self.value_batch_size = value_batch_size
        self.diagnostics = diagnostics
        self.fast = fast
        # the baseline's state (pickled with the model; the value net itself is the policy's value head)
        self.baseline_state: Baseline = make_baseline(baseline, n_epochs=n_value_epochs, batch_size=value_batch_size)
        self._init_reference(locals())
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._maybe_recommend_cpu()
        # complete episodes instead of SB3's fixed-size rollout buffer (the name keeps it out of saved files)
        self.rollout_buffer = EpisodeBuffer(self.n_envs)
        self.value_lr_schedule = FloatSchedule(self.value_learning_rate)
        if self.baseline_state.uses_value_function:
            # the value baseline's own optimiser, same class and options as the policy's
            self.value_optimizer = self.policy.optimizer_class(
                value_parameters(self.policy),
                lr=self.value_lr_schedule(1.0),  # type: ignore[call-arg]
                **self.policy.optimizer_kwargs,
            )
        self._setup_measurement()
        self._setup_reference()

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]
        if self.baseline_state.uses_value_function:
            state_dicts.append("value_optimizer")
        return state_dicts, []

    # ----- collection of complete episodes --------------------------------------------------------

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        last_obs = self._last_obs
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if self._last_obs is not last_obs:
            # the environments were reset: the episodes in progress cannot be continued
            self.rollout_buffer.reset_in_progress()
        return result

    def _batch_ready(self) -> bool:
        if self.n_episodes is not None:
            return self.rollout_buffer.n_finished_episodes >= self.n_episodes
        return self.rollout_buffer.n_finished_steps >= self.n_steps

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: EpisodeBuffer,
        n_rollout_steps: int | None = None,
    ) -> bool:
        """
        SB3's entry point: ``_collect_episodes`` with a clear error on a non-finite observation.

        :param rollout_buffer: the episode buffer (``self.rollout_buffer``)
        :param n_rollout_steps: ignored (SB3's signature): the batch size is ``n_steps`` / ``n_episodes``
        """
        with nonfinite_observation_guard(self):
            return self._collect_episodes(env, callback, rollout_buffer)

    def _collect_episodes(self, env: VecEnv, callback: BaseCallback, rollout_buffer: EpisodeBuffer) -> bool:
        """
        Step the environments with the current policy until the batch of finished episodes is complete
        (``n_steps`` transitions or ``n_episodes`` episodes). Unfinished episodes stay in ``rollout_buffer``.

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the collection)
        :param rollout_buffer: the episode buffer
        :return: True if the batch is complete, False if a callback stopped the collection
        """
        assert self._last_obs is not None, "No previous observation was provided"
        assert rollout_buffer.n_envs == env.num_envs, "the episode buffer was made for another number of environments"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)
        n_steps = 0
        # Sample new weights for the state dependent exploration
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()
        # the fast path: the same actions, drawn without torch.distributions objects (docs/speed.md)
        kernel = self._kernel()  # None with gSDE (its distribution is not the kernel's)
        # "sync" once the batch is ready: the environments whose (unfinished) episode is still recorded
        recording: np.ndarray | None = None

        while not self._batch_ready() or (recording is not None and recording.any()):
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                # Sample a new noise matrix
                self.policy.reset_noise(env.num_envs)

            actions, log_probs = self._sample_actions(kernel)

            # Rescale and perform action
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    # Unscale the actions to match env bounds if they were previously squashed (scaled in [-1, 1])
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # Otherwise, clip the actions to avoid out of bound error as we are sampling from an unbounded Gaussian
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1
            # the unclipped action is stored: it is the one whose log-probability the gradient uses
            rollout_buffer.add(self._last_obs, actions, rewards, dones, infos, log_probs, recording)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            if recording is not None:
                # "sync": an environment whose episode ended waits (its next steps are dropped)
                recording &= ~dones
            elif self.off_policy_correction == "sync" and self._batch_ready():
                # "sync": run the unfinished episodes to their end with this policy, recording nothing else
                recording = rollout_buffer.envs_in_progress

        if recording is not None and rollout_buffer.n_discarded_steps > 0:
            # the waiting environments are inside episodes that were not recorded: every environment starts anew
            self._last_obs = env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
            rollout_buffer.reset_in_progress()

        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _sample_actions(self, kernel: PolicyKernel | None) -> tuple[np.ndarray, np.ndarray | None]:
        """
        :param kernel: the fast path's kernel, or None for SB3's distribution
        :return: actions for ``self._last_obs`` and, with ``off_policy_correction="importance"``, their
            log-probabilities (the behaviour policy's, stored for the importance weights), else None
        """
        with_log_prob = self.off_policy_correction == "importance"
        if kernel is not None:
            with th.inference_mode():
                output = kernel.actor_output(kernel.features(kernel.observation(self._last_obs)))  # type: ignore[arg-type]
                actions, parameters = kernel.sample(output)
                log_probs = kernel.log_prob(output, parameters, actions).numpy() if with_log_prob else None
            return actions.numpy(), log_probs
        with th.no_grad():
            obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
            distribution = self.policy.get_distribution(obs_tensor)
            actions_tensor = distribution.get_actions()
            log_probs = distribution.log_prob(actions_tensor).cpu().numpy() if with_log_prob else None
        return actions_tensor.cpu().numpy(), log_probs

    # ----- returns and baselines ----------------------------------------------------------------------

    def _log_prob(self, observations: TensorObservation, actions: th.Tensor) -> th.Tensor:
        """log pi(a|s) of the current policy, with gradient."""
        return self.policy.get_distribution(observations).log_prob(actions)

    def _bootstrap_values(self, batch: EpisodeBatch) -> np.ndarray:
        """
        V(s_T) for every time-limit-truncated episode when the value baseline is used and ``truncation_as_terminal``
        is off, else 0 (truncation = end).

        :return: one value per episode
        """
        bootstrap = np.zeros(batch.n_episodes)
        if not self.baseline_state.uses_value_function or self.truncation_as_terminal:
            return bootstrap
        truncated = [i for i, ep in enumerate(batch.episodes) if ep.truncated and ep.terminal_observation is not None]
        if truncated:
            terminal = [batch.episodes[i].terminal_observation for i in truncated]
            if isinstance(terminal[0], dict):
                stacked: Any = {key: np.stack([obs[key] for obs in terminal]) for key in terminal[0]}  # type: ignore[index]
            else:
                stacked = np.stack(terminal)  # type: ignore[arg-type]
            with th.no_grad():
                values = self.policy.predict_values(obs_as_tensor(stacked, self.device)).flatten()
            bootstrap[truncated] = values.double().cpu().numpy()
        return bootstrap

    def compute_returns(self, batch: EpisodeBatch, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """
        Monte-Carlo returns of every step, bootstrapped with gamma^(T-t) V(s_T) at a time-limit truncation only
        when the value baseline is used (and ``truncation_as_terminal`` is off).

        :param batch: finished episodes
        :param weights: per-decision importance weights of the steps (``importance_weights``): the policy-gradient
            targets are then ``weighted_returns`` (the value targets stay the plain reward-to-go)
        :return: (the targets of the policy gradient: the reward-to-go G_t, or with ``reward_to_go=False`` the
            episode return G_0 at every step; the reward-to-go G_t, which the value baseline is regressed on),
            float64 arrays of shape (batch.n_steps,)
        """
        bootstrap = self._bootstrap_values(batch)
        reward_to_go = [
            discounted_returns(episode.rewards, self.gamma, True, bootstrap[i]) for i, episode in enumerate(batch.episodes)
        ]
        value_targets = np.concatenate(reward_to_go)
        if weights is not None:
            weighted = [
                weighted_returns(episode.rewards, weights[batch.episode_slice(i)], self.gamma, self.reward_to_go, bootstrap[i])
                for i, episode in enumerate(batch.episodes)
            ]
            return np.concatenate(weighted), value_targets
        if self.reward_to_go:
            return value_targets, value_targets
        return np.concatenate([np.full(len(returns), returns[0]) for returns in reward_to_go]), value_targets

    def _importance_weights(self, batch: EpisodeBatch, log_prob: th.Tensor) -> np.ndarray | None:
        """
        :param log_prob: log pi(a_t|s_t) of the batch under the current policy
        :return: the per-decision importance weights W_t of the batch with ``off_policy_correction="importance"``
            when some steps were carried over, else None (every step on-policy: the plain estimator)
        """
        carried = [episode.carried_over for episode in batch.episodes]
        if self.off_policy_correction != "importance" or not any(carried):
            return None
        behaviour = np.concatenate(
            [
                episode.behaviour_log_probs if episode.behaviour_log_probs is not None else np.full(len(episode), np.nan)
                for episode in batch.episodes
            ]
        )
        log_ratio = log_prob.detach().double().cpu().numpy() - behaviour
        return importance_weights(log_ratio, carried, batch.starts)

    # ----- the update -------------------------------------------------------------------------------

    def _shape_episode_rewards(self, batch: EpisodeBatch) -> None:
        """
        The reference on the batch (pi_old: the policy before this update, also for carried-over steps) and, with
        ``ref_kl_placement="reward"``, r_t - beta * k(log pi_old(a_t|s_t) - log pi_ref(a_t|s_t)) in every episode.
        """
        if self.reference is None:
            return
        keep = self.reference.placement == "loss"
        self._ref_batch, shaping = self._reference_batch(batch.observations, batch.actions, None, keep_snapshot=keep)
        if shaping is None:
            return
        batch.rewards = batch.rewards + shaping
        for index, episode in enumerate(batch.episodes):
            episode.rewards = episode.rewards + shaping[batch.episode_slice(index)]

    def _grad_variance(self, inputs: PolicyGradientBatch, gradient: PolicyGradient) -> float | None:
        """
        ``train/grad_variance``: the trace of the sample covariance of the per-episode estimates ghat_i. Free with the
        optimal baseline (it computes them); otherwise one ``autograd.grad`` per episode (3-4x the rest of a none/mean
        update on CartPole-v1), so only at ``diagnostics="full"``, in eval mode with PyTorch's random state restored.
        """
        if gradient.estimates is not None:
            return covariance_trace(gradient.estimates) if self._measurement.enabled else None
        if self._measurement.level != "full" or gradient.advantages is None:
            return None
        with measuring(self.policy, no_grad=False):
            (rows,) = per_episode_gradients(self._log_prob, inputs.parameters, inputs.batch, [gradient.advantages])
        return covariance_trace(rows)

    def train(self) -> None:
        """
        One REINFORCE update on the finished episodes: targets, the baseline's policy gradient, one optimizer step,
        then the value regression (value baseline) and the diagnostics.
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)

        discarded_steps = self.rollout_buffer.n_discarded_steps
        episodes = self.rollout_buffer.pop_finished()
        if not episodes:
            return
        batch = EpisodeBatch.from_episodes(episodes, self.device, isinstance(self.action_space, spaces.Discrete))

        # The reference-policy term (off: reference is None): ref_kl, and the KL-shaped rewards before the returns
        self._shape_episode_rewards(batch)
        # Monte-Carlo targets, and V(s) *before* the fit (the baseline must not have seen this batch)
        targets, value_targets = self.compute_returns(batch)
        values = None
        if self.baseline_state.uses_value_function:
            with th.no_grad():
                values = self.policy.predict_values(batch.observations).flatten().double().cpu().numpy()
        # The policy before the step, for the diagnostics
        old_policy = (
            OldPolicy(self.policy, batch.observations, batch.actions, None, self._kl_method)
            if self._measurement.enabled
            else None
        )

        distribution = self.policy.get_distribution(batch.observations)
        log_prob = distribution.log_prob(batch.actions)
        entropy = distribution.entropy()
        # Entropy loss favors exploration (approximate entropy when no analytical form)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        # The policy-gradient term, formed by the baseline: its loss's gradient is -ghat
        # per-decision importance weights of the carried-over steps (off_policy_correction="importance")
        weights = self._importance_weights(batch, log_prob)
        if weights is not None:
            targets, _ = self.compute_returns(batch, weights)
        params = actor_parameters(self.policy)
        inputs = PolicyGradientBatch(
            batch, targets, values, log_prob, self._log_prob, params, self.normalize_advantage, weights=weights
        )
        gradient = self.baseline_state.policy_gradient(inputs)
        grad_variance = self._grad_variance(inputs, gradient)
        loss = gradient.loss + self.ent_coef * entropy_loss
        if self.reference is not None and self.reference.placement == "loss":
            # + beta * KL(pi_theta || pi_ref) on the batch states (a fresh forward pass: SB3's distribution object is
            # reused by every forward pass, e.g. the baseline's)
            loss = self._with_reference_penalty(loss, self.policy.get_distribution(batch.observations))

        # Optimization step (one per update)
        self.policy.optimizer.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(params, self.max_grad_norm if self.max_grad_norm is not None else math.inf)
        # Numerical guard: never write non-finite weights, skip this update instead
        if not self.nonfinite_guard.skipped("policy gradient norm", grad_norm, optimizer=self.policy.optimizer):
            self.policy.optimizer.step()
        self.policy.optimizer.zero_grad()
        self._n_updates += 1
        change = self._measure_update(old_policy)
        self._record_reference(batch.n_steps)

        # The value baseline's regression on the reward-to-go, with its own optimiser
        if isinstance(self.baseline_state, ValueBaseline):
            value_lr = self.value_lr_schedule(self._current_progress_remaining)
            update_learning_rate(self.value_optimizer, value_lr)
            # SB3's calls or the fast path's (the same arithmetic, docs/speed.md)
            value_steps = self._update_steps(optimizer=self.value_optimizer)
            value_loss = self.baseline_state.fit(value_steps, batch, value_targets, self.nonfinite_guard)
            self.logger.record("train/value_loss", value_loss)
            self.logger.record("train/value_learning_rate", value_lr)

        # Logs: SB3's keys ...
        self.logger.record("train/policy_gradient_loss", gradient.pg_loss)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/loss", gradient.pg_loss + self.ent_coef * entropy_loss.item())
        if gradient.baseline is not None:
            self.logger.record("train/explained_variance", float(explained_variance(gradient.baseline, targets)))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/nonfinite_steps", self.nonfinite_guard.n_skipped)
        # ... the batch and the baseline ...
        self.logger.record("train/n_episodes", batch.n_episodes)
        self.logger.record("train/batch_steps", batch.n_steps)
        carried_over_steps = sum(episode.carried_over for episode in episodes)
        self.logger.record("train/carried_over_steps", carried_over_steps)
        self.logger.record("train/carried_over_fraction", carried_over_steps / batch.n_steps)
        if self.off_policy_correction == "sync":
            self.logger.record("train/discarded_steps", discarded_steps)
        if weights is not None:
            # the importance weights W_t of the batch through the shared ratio statistics: is_weight_mean ... is_ess
            statistics = RatioStatistics()
            statistics.add(th.as_tensor(weights))
            for key, value in statistics.summary().items():
                self.logger.record(f"train/is_{key.replace('ratio_', 'weight_')}", value)
        self.logger.record("train/return_mean", float(targets.mean()))
        for key, value in self.baseline_state.last_stats.items():
            self.logger.record(f"train/{key}", value)
        if grad_variance is not None:
            self.logger.record("train/grad_variance", grad_variance)
        # ... and the shared diagnostics vocabulary
        if self._measurement.enabled:
            self.logger.record("train/grad_norm", grad_norm.item())
        self._measurement.record(self.logger, change, approx_kl=True)

    def learn(
        self: SelfREINFORCE,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "REINFORCE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfREINFORCE:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
