"""The reference-policy KL term: fine-tuning toward a frozen reference policy (the RLHF objective).

Every algorithm of the package can keep the policy pi near a frozen reference pi_ref (a pretrained or behaviour-cloned
policy, or the policy at the first ``learn()``) with a KL term of coefficient beta, placed

- in the reward (``ref_kl_placement="reward"``, Ziegler et al. 2019, InstructGPT, TRL):
  r'_t = r_t - beta * k(log pi_old(a_t|s_t) - log pi_ref(a_t|s_t)), applied to the rollout rewards before the returns
  and advantages are computed (k = the ``ref_kl_estimator``, k1 = the log-ratio itself in RLHF), or
- in the loss (``ref_kl_placement="loss"``, kickstarting, GRPO): + beta * E_s[KL(pi_theta(.|s) || pi_ref(.|s))] in every
  minibatch loss, exact (all of SB3's distributions have a closed form; TRPOKL subtracts it from its surrogate).

beta is held by the controllers PPOKL uses (``ppo_kl/kl_control.py``), updated once per update from ``ref_kl``, the
exact mean KL(pi_old || pi_ref) on the rollout states (measured before the update). ``ReferenceTerm`` holds the frozen
policy, its observation normalisation and the controller, and is saved inside the model zip;
``ReferenceAlgorithm`` is the algorithms' side (arguments, checks, the shaping, the loss term and the logs).

Paper: Ziegler et al. 2019, https://arxiv.org/abs/1909.08593 (section 2.2); Schmitt et al. 2018 (kickstarting),
https://arxiv.org/abs/1803.03835; estimators k1/k3: http://joschu.net/blog/kl-approx.html, abs/mse: TRL's ``kl_penalty``.
"""

from __future__ import annotations

import copy
import os
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_ppo_variants.common.diagnostics import measuring
from sb3_ppo_variants.common.distributions import DistributionSnapshot, has_analytic_kl
from sb3_ppo_variants.common.validation import check_choice, check_float, check_int

if TYPE_CHECKING:
    from sb3_ppo_variants.ppo_kl.kl_control import KLController

#: ``ref_policy``: None (off), "initial", a path to an SB3 zip, a loaded SB3 model or policy
RefPolicy = str | os.PathLike | BaseAlgorithm | BasePolicy | None
#: ``ref_vec_normalize``: None, "raw", a path to a saved VecNormalize or a VecNormalize
RefVecNormalize = str | os.PathLike | VecNormalize | None
RefKLPlacement = Literal["reward", "loss"]
REF_KL_PLACEMENTS: tuple[RefKLPlacement, ...] = ("reward", "loss")
RefKLEstimator = Literal["k1", "k3", "abs", "mse"]
REF_KL_ESTIMATORS: tuple[RefKLEstimator, ...] = ("k1", "k3", "abs", "mse")
#: ``init_from_ref``: False (the policy's own initialisation), True or "actor" (the actor's weights), "actor_critic"
INIT_FROM_REF = (False, True, "actor", "actor_critic")
#: the constructor's arguments of the reference term and their defaults (feature off)
REF_DEFAULTS: dict[str, Any] = {
    "ref_policy": None,
    "ref_kl_coef": 0.0,
    "ref_kl_controller": "fixed",
    "ref_kl_target": None,
    "ref_kl_horizon": None,
    "ref_kl_placement": "reward",
    "ref_kl_estimator": "k1",
    "init_from_ref": False,
    "ref_vec_normalize": None,
}
# state-dict prefixes of SB3's ActorCriticPolicy that belong to the critic (init_from_ref="actor" leaves them alone)
_CRITIC_PREFIXES = ("vf_features_extractor.", "mlp_extractor.value_net.", "value_net.")


def sample_kl(log_ratio: th.Tensor, estimator: RefKLEstimator) -> th.Tensor:
    """
    Per-sample estimate of KL(pi || pi_ref) from log_ratio = log pi(a|s) - log pi_ref(a|s), a ~ pi.

    :param log_ratio: the log-ratios
    :param estimator: ``"k1"`` (the log-ratio: unbiased, can be negative; Ziegler's and TRL's default), ``"k3"``
        ((r - 1) - log r with r = pi_ref / pi: unbiased and >= 0; GRPO's), ``"abs"`` (|log-ratio|) or ``"mse"``
        (log-ratio^2 / 2, k2) (TRL's ``kl_penalty`` options; biased, >= 0)
    :return: tensor of the same shape
    """
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return th.expm1(-log_ratio) + log_ratio
    if estimator == "abs":
        return log_ratio.abs()
    return 0.5 * log_ratio.square()


def check_reference_arguments(kwargs: dict[str, Any]) -> None:
    """
    Validate the reference term's constructor arguments (``TypeError``/``ValueError`` naming the argument and the
    allowed values), before anything is built.

    :param kwargs: the constructor's arguments by name (``locals()`` at the top of ``__init__``)
    """
    ref_policy = kwargs["ref_policy"]
    if ref_policy is None:
        changed = [name for name, default in REF_DEFAULTS.items() if name != "ref_policy" and kwargs[name] != default]
        if changed:
            raise ValueError(f"{', '.join(changed)} need a reference policy: set ref_policy (a path, a model or 'initial')")
        return
    if not isinstance(ref_policy, str | os.PathLike | BaseAlgorithm | BasePolicy):
        raise TypeError(
            "ref_policy must be None, 'initial', a path to an SB3 .zip, or a loaded SB3 model or policy, "
            f"got {type(ref_policy).__name__}"
        )
    from sb3_ppo_variants.ppo_kl.kl_control import KL_CONTROLLERS  # not at the top: ppo_kl imports this module

    controller = kwargs["ref_kl_controller"]
    check_choice("ref_kl_controller", controller, KL_CONTROLLERS)
    check_float("ref_kl_coef", kwargs["ref_kl_coef"], low=0.0)
    check_float("ref_kl_target", kwargs["ref_kl_target"], low=0.0, low_open=True, allow_none=True)
    check_int("ref_kl_horizon", kwargs["ref_kl_horizon"], allow_none=True)
    if controller != "fixed" and (kwargs["ref_kl_target"] is None or kwargs["ref_kl_coef"] == 0.0):
        raise ValueError(
            f"ref_kl_controller={controller!r} needs ref_kl_target > 0 and ref_kl_coef > 0 (the initial beta), got "
            f"ref_kl_target={kwargs['ref_kl_target']!r}, ref_kl_coef={kwargs['ref_kl_coef']!r}"
        )
    if kwargs["ref_kl_horizon"] is not None and controller != "proportional":
        raise ValueError(f"ref_kl_horizon is the proportional controller's gain, got ref_kl_controller={controller!r}")
    check_choice("ref_kl_placement", kwargs["ref_kl_placement"], REF_KL_PLACEMENTS)
    check_choice("ref_kl_estimator", kwargs["ref_kl_estimator"], REF_KL_ESTIMATORS)
    init_from_ref = kwargs["init_from_ref"]
    if not any(init_from_ref is choice or (isinstance(choice, str) and init_from_ref == choice) for choice in INIT_FROM_REF):
        raise ValueError(f"init_from_ref must be one of {INIT_FROM_REF}, got {init_from_ref!r}")
    if init_from_ref is not False and isinstance(ref_policy, str) and ref_policy == "initial":
        raise ValueError("init_from_ref needs a reference other than ref_policy='initial' (which is the initial policy)")
    vec_normalize = kwargs["ref_vec_normalize"]
    if vec_normalize is not None and not isinstance(vec_normalize, str | os.PathLike | VecNormalize):
        raise TypeError(
            "ref_vec_normalize must be None, 'raw', a path to a saved VecNormalize (.pkl) or a VecNormalize, "
            f"got {type(vec_normalize).__name__}"
        )


def make_ref_kl_controller(name: str, kl_coef: float, kl_target: float | None) -> KLController | None:
    """
    :return: the controller of beta (``ppo_kl/kl_control.py``'s classes), None for a fixed beta of 0 (no penalty)
    """
    from sb3_ppo_variants.ppo_kl.kl_control import make_kl_controller  # not at the top: ppo_kl imports this module

    if name == "fixed" and kl_coef == 0.0:
        return None
    # the fixed controller ignores the target; a placeholder keeps KLController's check (> 0) meaningful for the others
    return make_kl_controller(name, kl_coef=kl_coef, kl_target=kl_target if kl_target is not None else 1.0)  # type: ignore[arg-type]


def _describe(value: Any) -> Any:
    """The saved form of an argument that may be an object: None, numbers and strings as they are, objects by type."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__name__}>"


def build_frozen(policy_class: type[BasePolicy], parameters: dict[str, Any], weights: dict[str, th.Tensor]) -> BasePolicy:
    """
    A policy rebuilt as ``BasePolicy.load`` does (class, constructor parameters, weights), in eval mode, without
    gradients or optimizer; PyTorch's random state is untouched (building a network draws initial weights).
    """
    with th.random.fork_rng():
        policy = policy_class(**parameters)
    policy.load_state_dict(weights)
    policy.optimizer = None  # type: ignore[assignment]  # the reference is never optimised
    policy.set_training_mode(False)
    policy.requires_grad_(False)
    return policy


def frozen_copy(policy: BasePolicy) -> BasePolicy:
    """:return: a frozen copy of the policy (``build_frozen``), on the CPU"""
    weights = {key: value.detach().cpu().clone() for key, value in policy.state_dict().items()}
    return build_frozen(type(policy), policy._get_constructor_parameters(), weights)


def load_policy(path: str | os.PathLike) -> BasePolicy:
    """
    The policy of an SB3 zip saved by any on-policy algorithm (SB3, sb3-contrib, this package), rebuilt from the zip's
    ``policy_class``, spaces and ``policy_kwargs`` and its weights, on the CPU.

    :param path: path to the .zip
    :return: the frozen policy
    """
    data, params, _ = load_from_zip_file(os.fspath(path), device="cpu")
    if data is None or "policy" not in params or "policy_class" not in data:
        raise ValueError(f"ref_policy: {os.fspath(path)!r} is not an SB3 model zip with a policy")
    with th.random.fork_rng():  # building the network draws initial weights: do not move the user's random state
        policy = data["policy_class"](
            data["observation_space"],
            data["action_space"],
            lambda _: 0.0,
            use_sde=data.get("use_sde", False),
            **data.get("policy_kwargs", {}),
        )
    policy.load_state_dict(params["policy"])
    return frozen_copy(policy)


class ObservationNormalizer:
    """
    The frozen observation statistics of a ``VecNormalize`` (what the reference was trained with), without its venv.

    :param vec_normalize: the ``VecNormalize`` whose statistics to use
    """

    def __init__(self, vec_normalize: VecNormalize) -> None:
        self.norm_obs = vec_normalize.norm_obs
        self.obs_rms: RunningMeanStd | dict[str, RunningMeanStd] = copy.deepcopy(vec_normalize.obs_rms)
        self.norm_obs_keys = list(getattr(vec_normalize, "norm_obs_keys", None) or [])
        self.clip_obs = vec_normalize.clip_obs
        self.epsilon = vec_normalize.epsilon

    def _normalize(self, obs: np.ndarray, rms: RunningMeanStd) -> np.ndarray:
        # VecNormalize._normalize_obs
        return np.clip((obs - rms.mean) / np.sqrt(rms.var + self.epsilon), -self.clip_obs, self.clip_obs).astype(np.float32)

    def normalize(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """``VecNormalize.normalize_obs`` with the frozen statistics"""
        if not self.norm_obs:
            return obs
        if isinstance(obs, dict) and isinstance(self.obs_rms, dict):
            return {
                key: self._normalize(value, self.obs_rms[key]) if key in self.norm_obs_keys else value
                for key, value in obs.items()
            }
        return self._normalize(obs, self.obs_rms)  # type: ignore[arg-type]


def make_observation_normalizer(value: Any) -> ObservationNormalizer | Literal["raw"] | None:
    """
    :param value: ``ref_vec_normalize``: None (the reference sees the policy's observations), ``"raw"`` (the raw
        observations), a ``VecNormalize`` or the path of one saved with ``VecNormalize.save`` (raw observations
        normalised with its statistics, frozen)
    :return: what ``ReferenceTerm`` keeps
    """
    if value is None:
        return None
    if isinstance(value, str) and value == "raw":
        return "raw"
    if isinstance(value, VecNormalize):
        return ObservationNormalizer(value)
    with open(value, "rb") as file:
        loaded = pickle.load(file)
    if not isinstance(loaded, VecNormalize):
        raise ValueError(f"ref_vec_normalize: {os.fspath(value)!r} is not a saved VecNormalize")
    return ObservationNormalizer(loaded)


def _same_observation_space(first: spaces.Space, second: spaces.Space) -> bool:
    """Same type and shape (Box bounds may differ: a changed task may widen them), Dict key by key."""
    if isinstance(first, spaces.Dict) and isinstance(second, spaces.Dict):
        return first.spaces.keys() == second.spaces.keys() and all(
            _same_observation_space(first[key], second[key]) for key in first.spaces
        )
    if isinstance(first, spaces.Box):
        return isinstance(second, spaces.Box) and first.shape == second.shape
    return first == second


@dataclass
class ReferenceBatch:
    """
    The reference on the states of one update (not saved).

    :param ref_kl: exact mean KL(pi_old || pi_ref) on the rollout states (the k3 estimate where no closed form exists)
    :param kl_reward: mean over the rollout steps of the KL-shaped part of the reward, -beta * k (None: loss placement)
    :param snapshot: the reference's distributions on the states of the loss, in the loss's order (loss placement)
    """

    ref_kl: float
    kl_reward: float | None = None
    snapshot: DistributionSnapshot | None = None


class ReferenceTerm:
    """
    The reference-policy term of an algorithm: the frozen reference policy (None until the first ``learn()`` with
    ``ref_policy="initial"``), its observation normalisation, where the KL goes and the controller of beta. Pickled
    with the model (the reference as its class, constructor parameters and weights), so ``load`` restores it.

    :param policy: the frozen reference, or None for "the policy at the first learn()"
    :param source: what ``ref_policy`` was (for ``repr`` and the logs)
    :param normalizer: see ``make_observation_normalizer``
    :param controller: beta's controller, None for beta = 0
    :param placement: ``"reward"`` or ``"loss"``
    :param estimator: the per-sample KL of the reward placement (``sample_kl``)
    :param horizon: the proportional controller's gain is n / horizon (n: samples of the update, Ziegler's and TRL's
        form) when set, else the controller's own gain (0.1)
    """

    def __init__(
        self,
        policy: BasePolicy | None,
        source: str,
        normalizer: ObservationNormalizer | Literal["raw"] | None,
        controller: KLController | None,
        placement: RefKLPlacement,
        estimator: RefKLEstimator,
        horizon: int | None = None,
    ) -> None:
        self.policy = policy
        self.source = source
        self.normalizer = normalizer
        self.controller = controller
        self.placement = placement
        self.estimator = estimator
        self.horizon = horizon

    @property
    def kl_coef(self) -> float:
        """:return: beta"""
        return 0.0 if self.controller is None else self.controller.kl_coef

    def __repr__(self) -> str:
        return f"ReferenceTerm(source={self.source!r}, placement={self.placement!r}, kl_coef={self.kl_coef})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.policy is not None:
            # the reference as BasePolicy.save keeps it: its class, constructor parameters and weights (on the CPU)
            weights = {key: value.detach().cpu() for key, value in self.policy.state_dict().items()}
            state["policy"] = (type(self.policy), self.policy._get_constructor_parameters(), weights)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["policy"] is not None:
            state["policy"] = build_frozen(*state["policy"])
        self.__dict__.update(state)

    def observations(self, observations: Any, env_normalizer: VecNormalize | None, device: th.device) -> Any:
        """
        :param observations: the policy's observations (tensors or NumPy arrays, or dicts of them)
        :param env_normalizer: the training environment's ``VecNormalize`` (None if it has none)
        :return: the reference's observations, as tensors on ``device``
        """
        if self.normalizer is None:
            return obs_as_tensor(observations, device) if not _is_tensor(observations) else observations
        raw = _to_numpy(observations)
        if env_normalizer is not None:
            raw = env_normalizer.unnormalize_obs(raw)
        if isinstance(self.normalizer, ObservationNormalizer):
            raw = self.normalizer.normalize(raw)
        return obs_as_tensor(raw, device)

    def distribution(self, observations: Any) -> Distribution:
        """:return: the reference's distribution on the (reference's) observations, without gradient"""
        assert self.policy is not None
        with th.no_grad():
            return self.policy.get_distribution(observations)  # type: ignore[operator]

    def check_compatible(self, policy: BasePolicy) -> None:
        """Raise a ``ValueError`` naming ``ref_policy`` if the reference's spaces or distribution differ from the policy's."""
        assert self.policy is not None
        ref = self.policy
        if not hasattr(ref, "get_distribution"):
            raise ValueError(
                f"ref_policy must be an SB3 policy with action distributions (e.g. PPO's), got {type(ref).__name__}"
            )
        if not _same_observation_space(ref.observation_space, policy.observation_space):
            raise ValueError(
                f"ref_policy has the observation space {ref.observation_space}, the policy {policy.observation_space}"
            )
        if ref.action_space != policy.action_space:
            raise ValueError(f"ref_policy has the action space {ref.action_space}, the policy {policy.action_space}")
        ref_dist, dist = getattr(ref, "action_dist", None), getattr(policy, "action_dist", None)
        if type(ref_dist) is not type(dist):
            raise ValueError(
                f"ref_policy's action distribution is {type(ref_dist).__name__}, the policy's {type(dist).__name__} "
                "(the same family is needed for the KL: e.g. both with or both without gSDE / squashing)"
            )

    def update_coef(self, ref_kl: float, n_samples: int) -> None:
        """Adapt beta once per update from the measured ``ref_kl`` (n_samples: the update's samples, for the horizon)."""
        if self.controller is None:
            return
        if self.horizon is not None:
            self.controller.gain = n_samples / self.horizon  # type: ignore[attr-defined]  # TRL's n_steps / horizon
        self.controller.update(ref_kl)


def _is_tensor(observations: Any) -> bool:
    return isinstance(observations, th.Tensor) or (
        isinstance(observations, dict) and all(isinstance(v, th.Tensor) for v in observations.values())
    )


def _to_numpy(observations: Any) -> Any:
    if isinstance(observations, dict):
        return {key: _to_numpy(value) for key, value in observations.items()}
    return observations.detach().cpu().numpy() if isinstance(observations, th.Tensor) else observations


def copy_weights(policy: BasePolicy, reference: BasePolicy, what: bool | str) -> None:
    """
    ``init_from_ref``: copy the reference's actor (True / ``"actor"``) or actor and critic (``"actor_critic"``) weights.

    :raises ValueError: naming ``init_from_ref`` when the networks differ
    """
    source = reference.state_dict()
    target = policy.state_dict()
    keys = [key for key in target if what == "actor_critic" or not key.startswith(_CRITIC_PREFIXES)]
    mismatched = [key for key in keys if key not in source or source[key].shape != target[key].shape]
    if mismatched:
        raise ValueError(
            f"init_from_ref={what!r}: the reference's network differs from the policy's at {mismatched[:4]} "
            "(use the reference's policy_kwargs, e.g. its net_arch)"
        )
    with th.no_grad():
        for key in keys:
            target[key].copy_(source[key])


class ReferenceAlgorithm(BaseAlgorithm):
    """
    Mixin of the four algorithms: the reference-policy term's arguments, its set-up (checks, ``init_from_ref``), the
    ``"initial"`` reference at the first ``learn()``, the KL penalty of the loss and the logs of one update.
    ``reference`` is None when the term is off (every algorithm then runs exactly as without it).
    """

    reference: ReferenceTerm | None = None
    _ref_batch: ReferenceBatch | None = None

    def _init_reference(self, arguments: dict[str, Any]) -> None:
        """
        Keep the arguments (objects by their type name, so the zip stays small) and build the reference term.
        Call in ``__init__`` after ``super().__init__``, before ``_setup_model``.

        :param arguments: the constructor's arguments by name (``check_reference_arguments`` has passed them)
        """
        for name in REF_DEFAULTS:
            setattr(self, name, _describe(arguments[name]))
        ref_policy = arguments["ref_policy"]
        if ref_policy is None:
            self.reference = None
            return
        if isinstance(ref_policy, BaseAlgorithm):
            policy: BasePolicy | None = frozen_copy(ref_policy.policy)
        elif isinstance(ref_policy, BasePolicy):
            policy = frozen_copy(ref_policy)
        elif isinstance(ref_policy, str) and ref_policy == "initial":
            policy = None
        else:
            policy = load_policy(ref_policy)
        self.reference = ReferenceTerm(
            policy,
            source=_describe(ref_policy),
            normalizer=make_observation_normalizer(arguments["ref_vec_normalize"]),
            controller=make_ref_kl_controller(
                arguments["ref_kl_controller"], arguments["ref_kl_coef"], arguments["ref_kl_target"]
            ),
            placement=arguments["ref_kl_placement"],
            estimator=arguments["ref_kl_estimator"],
            horizon=arguments["ref_kl_horizon"],
        )

    def _setup_reference(self) -> None:
        """Call at the end of ``_setup_model``: check the reference against the policy, move it, ``init_from_ref``."""
        if self.reference is None or self.reference.policy is None:
            return
        self.reference.check_compatible(self.policy)
        self.reference.policy = self.reference.policy.to(self.device)
        init_from_ref = getattr(self, "init_from_ref", False)
        if init_from_ref is not False:
            copy_weights(self.policy, self.reference.policy, init_from_ref)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> tuple[int, BaseCallback]:
        # ref_policy="initial": the reference is the policy as the first learn() finds it
        if self.reference is not None and self.reference.policy is None:
            self.reference.policy = frozen_copy(self.policy).to(self.device)
        return super()._setup_learn(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_ref_batch"]

    # ----- one update ----------------------------------------------------------------------------

    def _reference_batch(
        self, observations: Any, actions: th.Tensor, old_log_prob: th.Tensor | None, keep_snapshot: bool
    ) -> tuple[ReferenceBatch, np.ndarray | None]:
        """
        The reference on the update's states: exact mean KL(pi_old || pi_ref) (pi_old: the policy now, before the update)
        and, for the reward placement, the KL-shaped part of each step's reward -beta * k(log pi_old - log pi_ref).

        :param observations: the states (the policy's form, tensors)
        :param actions: the actions, in the form the policies' ``log_prob`` takes
        :param old_log_prob: log pi_old(a|s) from the rollout (None: computed here)
        :param keep_snapshot: keep the reference's distributions for the loss placement
        :return: the batch, and the reward change of every step (None for the loss placement), float64 NumPy
        """
        reference = self.reference
        assert reference is not None and reference.policy is not None
        ref_distribution = reference.distribution(
            reference.observations(observations, self.get_vec_normalize_env(), self.device)
        )
        ref_log_prob = ref_distribution.log_prob(actions)
        with measuring(self.policy):
            distribution = self.policy.get_distribution(observations)  # type: ignore[operator]
            if old_log_prob is None:
                old_log_prob = distribution.log_prob(actions)
            log_ratio = old_log_prob - ref_log_prob
            if has_analytic_kl(distribution) and has_analytic_kl(ref_distribution):
                ref_kl = DistributionSnapshot.from_distribution(distribution).kl_to(ref_distribution).mean().item()
            else:
                ref_kl = sample_kl(log_ratio, "k3").mean().item()
        batch = ReferenceBatch(ref_kl)
        if keep_snapshot:
            batch.snapshot = DistributionSnapshot.from_distribution(ref_distribution)
        if reference.placement != "reward":
            return batch, None
        shaping = (-reference.kl_coef * sample_kl(log_ratio, reference.estimator)).double().cpu().numpy()
        batch.kl_reward = float(shaping.mean())
        return batch, shaping

    def _reference_snapshot(self, observations: Any) -> None:
        """The loss placement: the reference's distributions on the loss's states, in its order (e.g. TRPOKL's batch)."""
        if self.reference is not None and self.reference.placement == "loss" and self._ref_batch is not None:
            reference_obs = self.reference.observations(observations, self.get_vec_normalize_env(), self.device)
            self._ref_batch.snapshot = DistributionSnapshot.from_distribution(self.reference.distribution(reference_obs))

    def _reference_penalty(self, distribution: Distribution, indices: np.ndarray | slice | None = None) -> th.Tensor | None:
        """
        The loss placement's beta * mean KL(pi_theta || pi_ref) on a minibatch (with gradient), None when not used.

        :param distribution: the current policy's distribution on the minibatch states
        :param indices: the minibatch's indices in the update's states (None: all of them)
        """
        batch = self._ref_batch
        if self.reference is None or batch is None or batch.snapshot is None:
            return None
        snapshot = batch.snapshot if indices is None else batch.snapshot[indices]  # type: ignore[index]
        return self.reference.kl_coef * snapshot.kl_from(distribution).mean()

    def _with_reference_penalty(
        self, value: th.Tensor, distribution: Distribution, indices: np.ndarray | None = None, sign: float = 1.0
    ) -> th.Tensor:
        """
        :param value: a loss (``sign=1``) or an objective to maximise (``sign=-1``, TRPOKL's surrogate)
        :return: value + sign * ``_reference_penalty(distribution, indices)``; ``value`` itself when there is none
        """
        penalty = self._reference_penalty(distribution, indices)
        if penalty is None:
            return value
        return value - penalty if sign < 0 else value + penalty

    def _record_reference(self, n_samples: int) -> None:
        """After the update: log ``ref_kl``, beta and the shaped reward, then let the controller adapt beta."""
        batch = self._ref_batch
        if self.reference is None or batch is None:
            return
        self.logger.record("train/ref_kl", batch.ref_kl)
        self.logger.record("train/ref_kl_coef", self.reference.kl_coef)  # the beta of this update
        if batch.kl_reward is not None:
            self.logger.record("train/ref_kl_reward", batch.kl_reward)
        if self.reference.controller is not None and getattr(self, "ref_kl_target", None) is not None:
            self.logger.record("train/ref_kl_target", self.reference.controller.kl_target)
        self.reference.update_coef(batch.ref_kl, n_samples)
        self._ref_batch = None


class ReferenceRollouts(ReferenceAlgorithm):
    """
    The reward placement for the algorithms with SB3's rollout buffer (PPO family, TRPOKL): after the collection, the
    reward of every step gets -beta * k(log pi_old - log pi_ref) (the truncation bootstrap SB3 added to the reward
    stays), and SB3's ``compute_returns_and_advantage`` runs again on the shaped rewards (the same last values).
    """

    def collect_rollouts(
        self, env: VecEnv, callback: BaseCallback, rollout_buffer: RolloutBuffer, n_rollout_steps: int
    ) -> bool:
        result = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)  # type: ignore[misc]
        if result and self.reference is not None:
            self._shape_rollout(rollout_buffer)
        return result

    def _shape_rollout(self, buffer: RolloutBuffer | DictRolloutBuffer) -> None:
        assert self.reference is not None
        # the buffer's (n_steps, n_envs) arrays in the order SB3's get() flattens them (environment after environment)
        flatten = RolloutBuffer.swap_and_flatten
        if isinstance(buffer.observations, dict):
            observations: Any = {key: buffer.to_torch(flatten(obs)) for key, obs in buffer.observations.items()}
        else:
            observations = buffer.to_torch(flatten(buffer.observations))
        actions = buffer.to_torch(flatten(buffer.actions).astype(np.float32, copy=False))
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        old_log_prob = buffer.to_torch(flatten(buffer.log_probs)).flatten()
        keep = self.reference.placement == "loss"
        self._ref_batch, shaping = self._reference_batch(observations, actions, old_log_prob, keep_snapshot=keep)
        if shaping is None:
            return
        buffer.rewards += shaping.reshape(buffer.n_envs, buffer.buffer_size).T.astype(buffer.rewards.dtype)
        with th.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))  # type: ignore[arg-type,operator]
        assert self._last_episode_starts is not None  # the dones of the rollout's last step
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self._last_episode_starts)
