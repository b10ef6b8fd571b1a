import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_ppo_variants.common.diagnostics import DIAGNOSTICS_LEVELS, DiagnosticsLevel, OldPolicy, PolicyChange
from sb3_ppo_variants.common.distributions import KL_ESTIMATORS, KLEstimator, mean_kl
from sb3_ppo_variants.common.ppo_family import InstrumentedPPO, clipped_surrogate
from sb3_ppo_variants.common.reference import (
    RefKLEstimator,
    RefKLPlacement,
    RefPolicy,
    RefVecNormalize,
    check_reference_arguments,
)
from sb3_ppo_variants.common.validation import check_bool, check_choice, check_ppo_arguments
from sb3_ppo_variants.ppo_kl.kl_control import KLController, KLControllerName, make_kl_controller
from sb3_ppo_variants.ppo_kl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfPPOKL = TypeVar("SelfPPOKL", bound="PPOKL")

# the constructor's arguments that define the KL controller (``load`` and ``configure_kl_control`` take them)
_CONTROLLER_SETTINGS = (
    "kl_controller",
    "kl_coef",
    "kl_target",
    "kl_tolerance",
    "kl_factor",
    "kl_gain",
    "kl_coef_min",
    "kl_coef_max",
    "kl_hold_lr_fraction",
    "kl_min",
    "kl_max",
    "kl_factor_up",
    "kl_factor_down",
)


class PPOKL(InstrumentedPPO):
    """
    Proximal Policy Optimization with a KL penalty (PPO-penalty), Schulman et al. 2017, section 4.

    Maximises E[r_t(theta) A_t] - beta * KL[pi_old(.|s_t) || pi_theta(.|s_t)] over ``n_epochs`` epochs of
    minibatches; once per update (after all epochs) a controller adapts beta from the mean KL d of
    that update: the paper's rule (``"adaptive"``: d < d_targ/1.5 -> beta/2, d > d_targ*1.5 -> beta*2),
    a constant (``"fixed"``) or Ziegler et al. 2019's proportional controller (``"proportional"``).

    Paper: https://arxiv.org/abs/1707.06347 (section 4, "Adaptive KL Penalty Coefficient");
    proportional controller: https://arxiv.org/abs/1909.08593 (section 2.2)
    Code: the update loop is Stable-Baselines3's PPO (https://github.com/DLR-RM/stable-baselines3),
    shared with PPOClip in ``sb3_ppo_variants.common.ppo_family``.

    Every argument of ``stable_baselines3.PPO`` keeps its name, meaning and default (``target_kl`` stays
    PPO's early-stopping threshold on the k3 estimate) except one, on purpose: ``clip_range`` defaults to
    ``None`` (no clipping, the paper's pure penalty); a float or schedule gives clip + penalty.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: ``None`` (default): no clipping (pure penalty); a float or schedule: the clipped surrogate
        plus the penalty
    :param clip_range_vf: Clipping parameter for the value function (None: no clipping)
    :param normalize_advantage: Whether to normalize the advantage or not
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: PPO's early stopping: stop the epochs of an update when the k3 estimate exceeds
        1.5 * target_kl (None: no early stopping). Not the penalty's target, see ``kl_target``.
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param kl_target: d_targ, the KL per update the controller aims at (> 0)
    :param kl_coef: initial beta (> 0), 1 in the paper
    :param kl_controller: ``"adaptive"`` (paper), ``"fixed"`` or ``"proportional"`` (Ziegler et al. 2019)
    :param kl_tolerance: adaptive controller: d is "on target" inside [d_targ/tol, d_targ*tol] (> 1, paper 1.5)
    :param kl_factor: adaptive controller: multiplicative change of beta (> 1, paper 2)
    :param kl_gain: proportional controller: K_beta (> 0, Ziegler et al. 0.1)
    :param kl_coef_min: lower bound of beta (> 0); hitting a bound warns once and is logged
    :param kl_coef_max: upper bound of beta (> kl_coef_min)
    :param kl_hold_lr_fraction: beta is not decreased while the learning rate is below this fraction of its initial
        value (in [0, 1], 0: never held): an annealed learning rate shrinks the step whatever beta is, and without
        the hold beta follows a schedule going to 0 down to ``kl_coef_min`` (a resumed run then takes huge steps)
    :param kl_estimator: KL used in the penalty and for d: ``"analytic"`` (exact KL of SB3's categorical,
        diagonal Gaussian, multi-categorical and Bernoulli distributions), ``"sample"`` (k3 estimator on the
        rollout actions) or ``"auto"`` (analytic where defined, sample otherwise)
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
    :param kl_min: adaptive controller: explicit lower threshold on d (<= kl_target; None: kl_target / kl_tolerance)
    :param kl_max: adaptive controller: explicit upper threshold on d (>= kl_target; None: kl_target * kl_tolerance)
    :param kl_factor_up: adaptive controller: beta's multiplier when d > kl_max (> 1; None: kl_factor). RLlib's rule is
        ``kl_min=kl_target/2, kl_max=2*kl_target, kl_factor_up=1.5, kl_factor_down=0.5``
    :param kl_factor_down: adaptive controller: beta's multiplier when d < kl_min (in (0, 1); None: divide by kl_factor)
    :param truncation_as_terminal: treat time-limit truncation as termination: no bootstrap with the value of the
        terminal observation (which SB3 adds on ``TimeLimit.truncated``); see ``sb3_ppo_variants.common.truncation``
    :param diagnostics: ``"off"``, ``"basic"`` (default) or ``"full"``; see docs/diagnostics.md
    :param fast: take the fast path where it applies (the same results, bit for bit, in less time; see
        docs/speed.md); ``False`` runs SB3's code everywhere
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    _policy_loss_uses_old_policy = True
    kl_control: KLController
    # the adaptive controller's explicit thresholds and factors (models saved before they existed read None)
    kl_min: float | None = None
    kl_max: float | None = None
    kl_factor_up: float | None = None
    kl_factor_down: float | None = None

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
        clip_range: float | Schedule | None = None,
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
        kl_target: float = 0.01,
        kl_coef: float = 1.0,
        kl_controller: KLControllerName = "adaptive",
        kl_tolerance: float = 1.5,
        kl_factor: float = 2.0,
        kl_gain: float = 0.1,
        kl_coef_min: float = 1e-6,
        kl_coef_max: float = 1e6,
        kl_hold_lr_fraction: float = 0.5,
        kl_estimator: KLEstimator = "auto",
        ref_policy: RefPolicy = None,
        ref_kl_coef: float = 0.0,
        ref_kl_controller: str = "fixed",
        ref_kl_target: float | None = None,
        ref_kl_horizon: int | None = None,
        ref_kl_placement: RefKLPlacement = "reward",
        ref_kl_estimator: RefKLEstimator = "k1",
        init_from_ref: bool | str = False,
        ref_vec_normalize: RefVecNormalize = None,
        kl_min: float | None = None,
        kl_max: float | None = None,
        kl_factor_up: float | None = None,
        kl_factor_down: float | None = None,
        truncation_as_terminal: bool = False,
        diagnostics: DiagnosticsLevel = "basic",
        fast: bool = True,
        _init_setup_model: bool = True,
    ):
        # Validate every argument before anything is built (and long before training)
        check_ppo_arguments(locals(), clip_range_allows_none=True)
        kl_control = make_kl_controller(
            kl_controller,
            kl_coef=kl_coef,
            kl_target=kl_target,
            kl_tolerance=kl_tolerance,
            kl_factor=kl_factor,
            kl_gain=kl_gain,
            kl_coef_min=kl_coef_min,
            kl_coef_max=kl_coef_max,
            kl_hold_lr_fraction=kl_hold_lr_fraction,
            kl_min=kl_min,
            kl_max=kl_max,
            kl_factor_up=kl_factor_up,
            kl_factor_down=kl_factor_down,
        )
        check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
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
            clip_range=clip_range,  # type: ignore[arg-type]  # None: no clipping (InstrumentedPPO handles it)
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
        self.kl_estimator = kl_estimator
        # the controller's settings (what ``load(path, kl_...=...)`` reconfigures), and the controller with beta
        self.kl_controller = kl_controller
        self.kl_coef = kl_coef
        self.kl_target = kl_target
        self.kl_tolerance = kl_tolerance
        self.kl_factor = kl_factor
        self.kl_gain = kl_gain
        self.kl_coef_min = kl_coef_min
        self.kl_coef_max = kl_coef_max
        self.kl_hold_lr_fraction = kl_hold_lr_fraction
        self.kl_min = kl_min
        self.kl_max = kl_max
        self.kl_factor_up = kl_factor_up
        self.kl_factor_down = kl_factor_down
        self.kl_control = kl_control
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
        # surrogate objective L^CPI (PPO paper eq. 6), optionally clipped (eq. 7)
        terms: dict[str, th.Tensor] = {}
        if clip_range is None:
            surrogate = (advantages * ratio).mean()
        else:
            surrogate, terms = clipped_surrogate(advantages, ratio, clip_range)
        # KL penalty (eq. 8): exact KL(pi_old || pi_theta) on the minibatch states, or its k3 estimate
        # (must follow evaluate_actions: SB3 keeps the minibatch's distribution in policy.action_dist)
        assert old_policy is not None
        kl = mean_kl(old_policy[batch_indices], self.policy.action_dist, log_ratio)
        kl_penalty = self.kl_control.kl_coef * kl
        policy_loss = -surrogate + kl_penalty
        return policy_loss, {**terms, "surrogate_objective": surrogate.detach(), "kl_penalty": kl_penalty.detach()}

    def _after_update(self, change: PolicyChange | None) -> None:
        # Adapt beta once per update with d = mean KL of this update (the paper's rule is applied per policy update)
        assert change is not None  # PPOKL always measures the change (_policy_loss_uses_old_policy)
        policy_kl = change.kl.mean().item()
        self.logger.record("train/kl_coef", self.kl_control.kl_coef)  # the beta used by this update
        self.logger.record("train/kl_target", self.kl_control.kl_target)
        # the learning rate of this update relative to the initial one (a schedule's progress; 1 for a constant, and
        # for a schedule that starts at 0, a warm-up, whose decay the hold cannot measure)
        initial_lr = self.lr_schedule(1.0)
        lr_fraction = self.lr_schedule(self._current_progress_remaining) / initial_lr if initial_lr > 0 else 1.0
        self.kl_control.update(policy_kl, lr_fraction=lr_fraction)
        self.logger.record("train/kl_coef_next", self.kl_control.kl_coef)
        self.logger.record("train/kl_coef_bound_hits", self.kl_control.n_bound_hits)
        self.logger.record("train/kl_coef_held", self.kl_control.n_held)
        if not np.isfinite(policy_kl):
            self.logger.record("train/kl_nonfinite", 1)

    def _excluded_save_params(self) -> list[str]:
        # "no clipping" (None) is PPOKL's default and is not saved: stable_baselines3.PPO.load then reads its own
        # default (0.2, clipped PPO) instead of failing on None; PPOKL.load reads PPOKL's default back
        excluded = super()._excluded_save_params()
        return [*excluded, "clip_range"] if self.clip_range is None else excluded

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfPPOKL],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfPPOKL:
        """
        SB3's ``load``, plus:

        - ``kl_*`` arguments reconfigure the saved controller (beta is kept unless ``kl_coef`` is given; it is then
          the new beta), with every argument validated as in the constructor;
        - a zip saved by another algorithm (e.g. ``stable_baselines3.PPO``: no KL controller in it) loads without its
          clipping (PPOKL's default) unless ``clip_range`` is passed, with a warning that says so.
        """
        data, _, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects)
        if data is not None and "kl_control" not in data and "clip_range" not in kwargs:
            warnings.warn(
                f"{cls.__name__}.load: the file was not saved by {cls.__name__} (no KL controller in it); its clip_range is "
                "dropped (pure KL penalty, the default) and the KL controller starts from the constructor's defaults "
                "or the kl_* arguments given. Pass clip_range=... to load to keep a clipping range."
            )
            kwargs["clip_range"] = None
        reconfigure = {name: kwargs[name] for name in _CONTROLLER_SETTINGS if name in kwargs}
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if reconfigure:
            model.configure_kl_control(**reconfigure)
        return model

    def configure_kl_control(self, **settings: Any) -> None:
        """
        Change the KL controller's settings (any of the constructor's ``kl_*`` controller arguments). Beta is kept,
        within the new bounds, unless ``kl_coef`` is given: it is then the new beta.

        :param settings: e.g. ``kl_target=0.02, kl_controller="proportional"``
        """
        unknown = set(settings) - set(_CONTROLLER_SETTINGS)
        if unknown:
            raise ValueError(f"configure_kl_control takes {_CONTROLLER_SETTINGS}, got {sorted(unknown)}")
        current = {name: getattr(self, name) for name in _CONTROLLER_SETTINGS} | settings
        if "kl_coef" not in settings:
            current["kl_coef"] = min(max(self.kl_control.kl_coef, current["kl_coef_min"]), current["kl_coef_max"])
        controller = make_kl_controller(**current)
        for name, value in settings.items():
            setattr(self, name, value)
        self.kl_control = controller

    def learn(
        self: SelfPPOKL,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOKL",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOKL:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
