from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_ppo_variants.common.diagnostics import DIAGNOSTICS_LEVELS, DiagnosticsLevel, OldPolicy
from sb3_ppo_variants.common.ppo_family import InstrumentedPPO, clipped_surrogate
from sb3_ppo_variants.common.reference import (
    RefKLEstimator,
    RefKLPlacement,
    RefPolicy,
    RefVecNormalize,
    check_reference_arguments,
)
from sb3_ppo_variants.common.validation import check_bool, check_choice, check_ppo_arguments
from sb3_ppo_variants.ppo_clip.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfPPOClip = TypeVar("SelfPPOClip", bound="PPOClip")


class PPOClip(InstrumentedPPO):
    """
    Proximal Policy Optimization, clipped surrogate objective (PPO-clip), instrumented.

    The same maths, constructor and defaults as ``stable_baselines3.PPO`` (with the same seed it learns
    the same parameters), plus the package's diagnostics: exact KL step size, importance-ratio statistics,
    effective sample size, gradient norm and signal-to-noise, and the clip fraction split into
    below 1 - eps and above 1 + eps.

    Paper: https://arxiv.org/abs/1707.06347
    Code: the update loop is Stable-Baselines3's PPO (https://github.com/DLR-RM/stable-baselines3),
    shared with PPOKL in ``sb3_ppo_variants.common.ppo_family``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter eps, it can be a function of the current progress remaining (from 1 to 0)
    :param clip_range_vf: Clipping parameter for the value function (None: no clipping)
    :param normalize_advantage: Whether to normalize the advantage or not
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (early stopping on the k3 estimate, as SB3 PPO)
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
    :param truncation_as_terminal: treat time-limit truncation as termination: no bootstrap with the value of the
        terminal observation (which SB3 adds on ``TimeLimit.truncated``); see ``sb3_ppo_variants.common.truncation``
    :param diagnostics: ``"off"`` (SB3 PPO's keys only), ``"basic"`` (default: the shared diagnostics,
        cheap) or ``"full"`` (adds per-state KL histogram and maximum); see docs/diagnostics.md
    :param fast: take the fast path where it applies (the same results, bit for bit, in less time; see
        docs/speed.md); ``False`` runs SB3's code everywhere
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
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
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
        # every argument checked before anything is built (SB3 only asserts a few)
        check_ppo_arguments(locals())
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
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
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
        self.truncation_as_terminal = truncation_as_terminal
        self.kl_estimator = "auto"  # exact KL where SB3's distribution has one, for train/policy_kl
        self._init_reference(locals())
        if _init_setup_model:
            self._setup_model()

    def _policy_loss(
        self,
        advantages: th.Tensor,
        ratio: th.Tensor,
        log_ratio: th.Tensor,
        clip_range: float | None,
        old_policy: OldPolicy | None,
        batch_indices: np.ndarray,
    ) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        # clipped surrogate loss (PPO paper eq. 7), same operations as SB3 PPO
        surrogate, terms = clipped_surrogate(advantages, ratio, clip_range)  # type: ignore[arg-type]
        return -surrogate, terms

    def learn(
        self: SelfPPOClip,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOClip",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOClip:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
