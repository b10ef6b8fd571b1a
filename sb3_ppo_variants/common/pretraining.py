"""Behaviour cloning as a starting point for fine-tuning: record demonstrations, fit a policy to them.

The ``imitation`` library, SB3's usual companion for this, pins stable-baselines3 2.2 and gymnasium 0.29, so it
cannot be installed beside current SB3. This module is the small part of it that "demonstrations -> behaviour
cloning -> RL fine-tuning with a KL term toward the cloned policy" needs:

- :func:`record_demonstrations`: the observations a trained model (or any object with SB3's ``predict``) sees and the
  actions it takes, with the undiscounted return of every episode it completes; :class:`Demonstrations` saves and
  loads them as ``.npz``;
- :func:`behaviour_cloning`: maximum likelihood of the demonstrated actions under an SB3 ``ActorCriticPolicy``
  (Box, Discrete, MultiDiscrete and MultiBinary actions): minibatches, epochs, Adam, optionally a progress bar; only
  the parameters the action distribution depends on change (the value head is left as it is);
- :func:`demonstration_log_likelihood`: the mean log-likelihood of the demonstrated actions under a policy.

Example (``ref_policy="initial"`` then keeps the fine-tuning near the cloned policy)::

    demos = record_demonstrations(expert, "CartPole-v1", n_episodes=5)
    model = PPOClip("MlpPolicy", "CartPole-v1", ref_policy="initial", ref_kl_coef=0.1)
    behaviour_cloning(model.policy, demos, n_epochs=20)
    model.learn(50_000)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from os import PathLike
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_ppo_variants.common.validation import check_bool, check_float, check_int

#: the arrays of a saved :class:`Demonstrations` (``np.savez``)
DEMONSTRATION_FIELDS = ("observations", "actions", "episode_returns", "episode_lengths")


@dataclass
class Demonstrations:
    """
    Demonstrated transitions.

    :param observations: one observation per transition, shape ``(n, *observation_space.shape)``
    :param actions: the action taken in each, shape ``(n, *action_space.shape)`` (``(n,)`` for Discrete)
    :param episode_returns: undiscounted return of every complete episode recorded (the Monitor's return when the
        environment has one: the raw reward, before any ``VecNormalize``)
    :param episode_lengths: length of every complete episode recorded
    """

    observations: np.ndarray
    actions: np.ndarray
    episode_returns: np.ndarray
    episode_lengths: np.ndarray

    def __post_init__(self) -> None:
        if len(self.observations) != len(self.actions):
            raise ValueError(
                f"demonstrations: observations and actions must have the same length, got {len(self.observations)} "
                f"and {len(self.actions)}"
            )
        if len(self.episode_returns) != len(self.episode_lengths):
            raise ValueError("demonstrations: episode_returns and episode_lengths must have the same length")

    def __len__(self) -> int:
        return len(self.observations)

    def save(self, path: str | PathLike[str]) -> None:
        """Save the arrays as a compressed ``.npz`` (numpy adds the suffix when ``path`` has none)."""
        np.savez_compressed(path, **{name: getattr(self, name) for name in DEMONSTRATION_FIELDS})

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Demonstrations:
        """:return: the demonstrations saved at ``path`` by :meth:`save`"""
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in DEMONSTRATION_FIELDS if name not in data]
            if missing:
                raise ValueError(f"{path}: not a demonstrations file, it lacks {missing}")
            return cls(**{name: data[name] for name in DEMONSTRATION_FIELDS})


def _as_vec_env(env: gym.Env | VecEnv | str, seed: int | None) -> VecEnv:
    if isinstance(env, VecEnv):
        if seed is not None:
            env.seed(seed)
        return env
    if isinstance(env, str):
        return make_vec_env(env, n_envs=1, seed=seed)
    if isinstance(env, gym.Env):
        vec_env = DummyVecEnv([lambda: env])
        if seed is not None:
            vec_env.seed(seed)
        return vec_env
    raise TypeError(f"env must be an environment id, a gymnasium.Env or a VecEnv, got {env!r}")


def record_demonstrations(
    model: Any,
    env: gym.Env | VecEnv | str,
    n_episodes: int | None = None,
    n_steps: int | None = None,
    deterministic: bool = True,
    seed: int | None = None,
) -> Demonstrations:
    """
    Run ``model`` in ``env`` and record what it observes and does.

    The observations are those ``env`` returns, i.e. those the model is given: with a ``VecNormalize`` they are
    normalised, and a policy cloned from them needs the same normalisation.

    :param model: an SB3 model or policy, or anything with SB3's ``predict(obs, state, episode_start, deterministic)``
        (recurrent policies included)
    :param env: an environment id (one environment with a Monitor), a ``gymnasium.Env`` or a ``VecEnv``
    :param n_episodes: record this many complete episodes (the first ones to finish; transitions of unfinished
        episodes are dropped)
    :param n_steps: or record this many transitions (including those of the episodes still running at the end)
    :param deterministic: the model's deterministic action (its mode) instead of a sample
    :param seed: seed of the environment's first reset (None: as it is)
    :return: the demonstrations
    """
    if (n_episodes is None) == (n_steps is None):
        raise ValueError(f"give exactly one of n_episodes and n_steps, got n_episodes={n_episodes!r}, n_steps={n_steps!r}")
    check_int("n_episodes", n_episodes, allow_none=True)
    check_int("n_steps", n_steps, allow_none=True)
    check_bool("deterministic", deterministic)
    check_int("seed", seed, minimum=None, allow_none=True)
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"model must have SB3's predict() (an SB3 model or policy), got {model!r}")
    vec_env = _as_vec_env(env, seed)
    if isinstance(vec_env.observation_space, spaces.Dict):
        raise ValueError("record_demonstrations: Dict observation spaces are not supported")
    n_envs = vec_env.num_envs
    running: list[tuple[list[np.ndarray], list[np.ndarray], float]] = [([], [], 0.0) for _ in range(n_envs)]
    observations: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    returns: list[float] = []
    lengths: list[int] = []
    obs = vec_env.reset()
    state = None
    episode_start = np.ones((n_envs,), dtype=bool)

    def recorded() -> int:
        return len(observations) + sum(len(episode[0]) for episode in running)

    while len(returns) < (n_episodes or math.inf) and recorded() < (n_steps or math.inf):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic)
        new_obs, rewards, dones, infos = vec_env.step(action)
        for i in range(n_envs):
            episode_obs, episode_actions, episode_return = running[i]
            episode_obs.append(np.array(obs[i]))  # type: ignore[index]  # an array: Dict spaces are rejected above
            episode_actions.append(np.array(action[i]))
            running[i] = (episode_obs, episode_actions, episode_return + float(rewards[i]))
            if dones[i]:
                monitor = infos[i].get("episode")
                returns.append(float(monitor["r"]) if monitor is not None else running[i][2])
                lengths.append(len(episode_obs))
                observations.extend(episode_obs)
                actions.extend(episode_actions)
                running[i] = ([], [], 0.0)
        obs, episode_start = new_obs, dones
    if n_steps is not None:  # the transitions of the episodes still running count too
        for episode_obs, episode_actions, _ in running:
            observations.extend(episode_obs)
            actions.extend(episode_actions)
        observations, actions = observations[:n_steps], actions[:n_steps]
    else:
        observations, actions = observations[: sum(lengths[:n_episodes])], actions[: sum(lengths[:n_episodes])]
        returns, lengths = returns[:n_episodes], lengths[:n_episodes]
    return Demonstrations(
        observations=np.stack(observations),
        actions=np.stack(actions),
        episode_returns=np.asarray(returns, dtype=np.float64),
        episode_lengths=np.asarray(lengths, dtype=np.int64),
    )


def _policy_of(policy: Any) -> ActorCriticPolicy:
    policy = getattr(policy, "policy", policy)  # a model: its policy
    if not isinstance(policy, ActorCriticPolicy):
        raise TypeError(f"policy must be an SB3 ActorCriticPolicy or a model that has one, got {type(policy).__name__}")
    return policy


def _check_demonstrations(policy: ActorCriticPolicy, demonstrations: Demonstrations) -> None:
    if not isinstance(demonstrations, Demonstrations):
        raise TypeError(f"demonstrations must be a Demonstrations, got {type(demonstrations).__name__}")
    if len(demonstrations) == 0:
        raise ValueError("demonstrations must hold at least one transition, got none")
    obs_shape = policy.observation_space.shape
    if isinstance(policy.observation_space, spaces.Dict) or demonstrations.observations.shape[1:] != obs_shape:
        raise ValueError(
            f"demonstrations: observations of shape {demonstrations.observations.shape[1:]} do not fit the policy's "
            f"observation space {policy.observation_space}"
        )
    action_space, actions = policy.action_space, demonstrations.actions
    if isinstance(action_space, spaces.Discrete):
        fits = actions.shape[1:] in ((), (1,)) and bool(np.all((actions >= 0) & (actions < action_space.n)))
    elif isinstance(action_space, spaces.MultiDiscrete):
        fits = actions.shape[1:] == action_space.shape and bool(np.all((actions >= 0) & (actions < action_space.nvec)))
    elif isinstance(action_space, spaces.MultiBinary):
        fits = actions.shape[1:] == action_space.shape and bool(np.all((actions == 0) | (actions == 1)))
    else:  # Box: any real action has a likelihood under a Gaussian
        fits = actions.shape[1:] == action_space.shape and bool(np.all(np.isfinite(actions)))
    if not fits:
        raise ValueError(
            f"demonstrations: actions of shape {actions.shape[1:]} (first {actions[:3].tolist()}) do not fit the "
            f"policy's action space {action_space}"
        )


def _action_tensor(policy: ActorCriticPolicy, actions: np.ndarray) -> th.Tensor:
    """The actions as the rollout buffer hands them to ``log_prob`` in SB3's ``PPO.train``."""
    tensor = th.as_tensor(actions, device=policy.device)
    if isinstance(policy.action_space, spaces.Discrete):
        return tensor.long().flatten()  # Convert discrete action from float to long (as PPO.train)
    if isinstance(policy.action_space, spaces.MultiDiscrete):
        return tensor.long()
    return tensor.float()


def _log_likelihood(policy: ActorCriticPolicy, observations: np.ndarray, actions: np.ndarray) -> tuple[th.Tensor, th.Tensor]:
    """:return: log pi(a|s) per transition and the entropy per state (-log pi(a|s) where it has no formula)"""
    distribution = policy.get_distribution(th.as_tensor(observations, device=policy.device))
    log_prob = distribution.log_prob(_action_tensor(policy, actions))
    entropy = distribution.entropy()
    return log_prob, (-log_prob if entropy is None else entropy)


def demonstration_log_likelihood(policy: Any, demonstrations: Demonstrations, batch_size: int = 4096) -> float:
    """
    :param policy: an SB3 ``ActorCriticPolicy`` or a model that has one
    :param demonstrations: the demonstrations
    :param batch_size: transitions evaluated at once
    :return: the mean log-likelihood of the demonstrated actions, (1/n) sum log pi(a_i|s_i)
    """
    policy = _policy_of(policy)
    _check_demonstrations(policy, demonstrations)
    check_int("batch_size", batch_size)
    total = 0.0
    training = policy.training
    policy.set_training_mode(False)
    with th.no_grad():
        for start in range(0, len(demonstrations), batch_size):
            stop = start + batch_size
            log_prob, _ = _log_likelihood(policy, demonstrations.observations[start:stop], demonstrations.actions[start:stop])
            total += float(log_prob.sum())
    policy.set_training_mode(training)
    return total / len(demonstrations)


def _progress_bar(total: int) -> Any:
    try:  # as SB3's ProgressBarCallback
        from tqdm import TqdmExperimentalWarning
        from tqdm.rich import tqdm
    except ImportError as error:
        raise ImportError(
            "progress_bar=True needs tqdm and rich: pip install stable_baselines3[extra] (or tqdm and rich)"
        ) from error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmExperimentalWarning)
        return tqdm(total=total, desc="behaviour cloning")


def behaviour_cloning(
    policy: Any,
    demonstrations: Demonstrations,
    n_epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    ent_coef: float = 0.0,
    max_grad_norm: float | None = None,
    seed: int | None = None,
    progress_bar: bool = False,
) -> list[float]:
    """
    Behaviour cloning: maximise the likelihood of the demonstrated actions under ``policy``,

        loss = -(1/|B|) sum_(s,a in B) log pi(a|s) - ent_coef * mean entropy,

    with Adam on shuffled minibatches B, ``n_epochs`` passes over the demonstrations (the BC of the ``imitation``
    library, Pomerleau 1991). Only the parameters the action distribution depends on receive a gradient, so only they
    change (with SB3's default separate networks: the actor and ``log_std``; a shared feature extractor is shared);
    the value head and the policy's own optimizer are left as they are.

    :param policy: an SB3 ``ActorCriticPolicy`` (ours too) or a model that has one; trained in place
    :param demonstrations: from :func:`record_demonstrations` (or built by hand)
    :param n_epochs: passes over the demonstrations
    :param batch_size: transitions per minibatch (the last one of an epoch may be smaller)
    :param learning_rate: Adam's step size
    :param ent_coef: weight of an entropy bonus (``imitation`` uses 1e-3; 0: pure maximum likelihood)
    :param max_grad_norm: clip the gradient's global norm (None: no clipping)
    :param seed: seed of the minibatch shuffling (None: torch's global generator)
    :param progress_bar: show a tqdm/rich progress bar, as ``learn(progress_bar=True)``
    :return: the mean loss of each epoch
    """
    policy = _policy_of(policy)
    _check_demonstrations(policy, demonstrations)
    check_int("n_epochs", n_epochs)
    check_int("batch_size", batch_size)
    check_float("learning_rate", learning_rate, low=0.0, low_open=True)
    check_float("ent_coef", ent_coef, low=0.0)
    check_float("max_grad_norm", max_grad_norm, low=0.0, low_open=True, allow_none=True)
    check_int("seed", seed, minimum=None, allow_none=True)
    check_bool("progress_bar", progress_bar)
    n = len(demonstrations)
    generator = None if seed is None else th.Generator().manual_seed(seed)
    # Adam skips the parameters without a gradient (the value head): they are not changed
    optimizer = th.optim.Adam(policy.parameters(), lr=learning_rate)
    n_batches = math.ceil(n / batch_size)
    bar = _progress_bar(n_epochs * n_batches) if progress_bar else None
    losses: list[float] = []
    training = policy.training
    policy.set_training_mode(True)
    try:
        for _ in range(n_epochs):
            order = th.randperm(n, generator=generator).numpy()
            epoch_loss = 0.0
            for start in range(0, n, batch_size):
                indices = order[start : start + batch_size]
                log_prob, entropy = _log_likelihood(
                    policy, demonstrations.observations[indices], demonstrations.actions[indices]
                )
                loss = -log_prob.mean() - ent_coef * entropy.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    th.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
                optimizer.step()
                epoch_loss += float(loss.detach()) * len(indices)
                if bar is not None:
                    bar.update(1)
            losses.append(epoch_loss / n)
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
    finally:
        policy.set_training_mode(training)
        if bar is not None:
            bar.close()
    return losses
