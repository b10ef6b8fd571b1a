"""A buffer of complete episodes for Monte-Carlo policy gradient (REINFORCE).

SB3's ``RolloutBuffer`` holds a fixed ``(n_steps, n_envs)`` block and bootstraps the returns at its
end; Monte-Carlo policy gradient instead needs whole episodes. ``EpisodeBuffer`` keeps one episode in
progress per environment and moves it to the list of finished episodes when the environment reports
``done``. Whatever is still in progress when an update happens stays in the buffer and is continued by
the next collection phase (it is *carried over*, not thrown away).

An ``EpisodeBatch`` is the concatenation of finished episodes, flattened to one time axis, with the
episode index of every step: the form the update and the gradient maths of ``reinforce/baselines.py`` use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

Observation = np.ndarray | dict[str, np.ndarray]
TensorObservation = th.Tensor | dict[str, th.Tensor]


def _index_obs(obs: Observation, env_idx: int) -> Observation:
    """The observation of one environment, copied (VecEnvs may reuse their observation arrays)."""
    if isinstance(obs, dict):
        return {key: np.array(value[env_idx]) for key, value in obs.items()}
    return np.array(obs[env_idx])


def _stack_obs(observations: list[Any]) -> Observation:
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)


def _concatenate_obs(observations: list[Any]) -> Observation:
    if isinstance(observations[0], dict):
        return {key: np.concatenate([obs[key] for obs in observations]) for key in observations[0]}
    return np.concatenate(observations)


@dataclass
class Episode:
    """
    One finished episode.

    :param observations: s_0 .. s_{T-1}, first dimension T (a dict of such arrays for Dict spaces)
    :param actions: a_0 .. a_{T-1} exactly as sampled by the policy (before clipping to the action bounds)
    :param rewards: r_0 .. r_{T-1}, as returned by the (possibly normalised) environment
    :param truncated: whether the episode was cut by a time limit (``TimeLimit.truncated``) rather than terminated
    :param terminal_observation: s_T when ``truncated`` (for bootstrapping with a learned value), else None
    :param carried_over: number of leading steps collected before the previous update (by an older policy)
    :param behaviour_log_probs: log mu_t(a_t|s_t) under the policy that sampled each step (recorded with
        ``off_policy_correction="importance"``, else None)
    """

    observations: Observation
    actions: np.ndarray
    rewards: np.ndarray
    truncated: bool = False
    terminal_observation: Observation | None = None
    carried_over: int = 0
    behaviour_log_probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class _EpisodeInProgress:
    observations: list[Any] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    carried_over: int = 0

    def finish(self, truncated: bool, terminal_observation: Observation | None) -> Episode:
        return Episode(
            observations=_stack_obs(self.observations),
            actions=np.stack(self.actions),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            truncated=truncated,
            terminal_observation=terminal_observation if truncated else None,
            carried_over=min(self.carried_over, len(self.rewards)),
            behaviour_log_probs=np.asarray(self.log_probs, dtype=np.float64) if self.log_probs else None,
        )


class EpisodeBuffer:
    """
    Per-environment episodes in progress plus the list of finished episodes waiting for an update.

    :param n_envs: number of parallel environments
    """

    def __init__(self, n_envs: int) -> None:
        self.n_envs = n_envs
        self.finished: list[Episode] = []
        self._n_finished_steps = 0
        #: transitions collected and dropped since the last update (``off_policy_correction="sync"``)
        self.n_discarded_steps = 0
        self.reset_in_progress()

    def reset_in_progress(self) -> None:
        """Forget the episodes in progress (after the environments were reset)."""
        self._in_progress = [_EpisodeInProgress() for _ in range(self.n_envs)]

    @property
    def n_finished_steps(self) -> int:
        """Number of transitions in finished episodes."""
        return self._n_finished_steps

    @property
    def n_finished_episodes(self) -> int:
        return len(self.finished)

    @property
    def n_steps_in_progress(self) -> int:
        """Number of transitions of unfinished episodes (carried over to the next update)."""
        return sum(len(episode.rewards) for episode in self._in_progress)

    @property
    def envs_in_progress(self) -> np.ndarray:
        """Whether each environment has an unfinished episode with at least one transition."""
        return np.array([len(episode.rewards) > 0 for episode in self._in_progress])

    def add(
        self,
        observations: Observation,
        actions: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
        log_probs: np.ndarray | None = None,
        recording: np.ndarray | None = None,
    ) -> int:
        """
        Record one step of every environment.

        :param observations: s_t of every environment (the observations the actions were chosen on)
        :param actions: a_t, first dimension n_envs
        :param rewards: r_t, shape (n_envs,)
        :param dones: whether the episode of each environment ended with this step
        :param infos: the VecEnv infos (``TimeLimit.truncated`` and ``terminal_observation`` are read)
        :param log_probs: log-probabilities of the actions under the policy that sampled them, to store (or None)
        :param recording: which environments' steps to record (default all); the others are counted as discarded
        :return: number of episodes that finished with this step
        """
        n_done = 0
        for env_idx in range(self.n_envs):
            if recording is not None and not recording[env_idx]:
                self.n_discarded_steps += 1
                continue
            episode = self._in_progress[env_idx]
            episode.observations.append(_index_obs(observations, env_idx))
            episode.actions.append(np.array(actions[env_idx]))
            episode.rewards.append(float(rewards[env_idx]))
            if log_probs is not None:
                episode.log_probs.append(float(log_probs[env_idx]))
            if dones[env_idx]:
                info = infos[env_idx]
                truncated = bool(info.get("TimeLimit.truncated", False))
                terminal_obs = info.get("terminal_observation")
                self.finished.append(episode.finish(truncated, terminal_obs))
                self._n_finished_steps += len(episode.rewards)
                self._in_progress[env_idx] = _EpisodeInProgress()
                n_done += 1
        return n_done

    def pop_finished(self) -> list[Episode]:
        """
        Hand over the finished episodes and mark the episodes in progress as carried over.

        :return: the finished episodes, in the order they finished
        """
        episodes, self.finished = self.finished, []
        self._n_finished_steps = 0
        self.n_discarded_steps = 0
        for episode in self._in_progress:
            episode.carried_over = len(episode.rewards)
        return episodes


@dataclass
class EpisodeBatch:
    """
    Finished episodes concatenated along one time axis (episode after episode).

    :param observations: every state, tensor(s) of first dimension n_steps
    :param actions: every action as a tensor, first dimension n_steps
    :param rewards: float64 array of shape (n_steps,)
    :param episode_index: for every step, the index of its episode in ``episodes`` (long tensor)
    :param starts: first step of each episode, shape (n_episodes + 1,) with the total length last
    :param episodes: the episodes themselves
    """

    observations: TensorObservation
    actions: th.Tensor
    rewards: np.ndarray
    episode_index: th.Tensor
    starts: np.ndarray
    episodes: list[Episode]

    @classmethod
    def from_episodes(cls, episodes: list[Episode], device: th.device | str, discrete_actions: bool) -> EpisodeBatch:
        """
        :param episodes: finished episodes (at least one)
        :param device: torch device of the tensors
        :param discrete_actions: whether actions are indices of a ``Discrete`` space (stored flat as long)
        :return: the batch
        """
        assert len(episodes) > 0, "an episode batch needs at least one finished episode"
        lengths = np.array([len(episode) for episode in episodes])
        starts = np.concatenate([[0], np.cumsum(lengths)])
        observations = obs_as_tensor(_concatenate_obs([episode.observations for episode in episodes]), device)  # type: ignore[arg-type]
        actions = th.as_tensor(np.concatenate([episode.actions for episode in episodes]), device=device)
        actions = actions.long().flatten() if discrete_actions else actions.float()
        episode_index = th.as_tensor(np.repeat(np.arange(len(episodes)), lengths), device=device)
        rewards = np.concatenate([episode.rewards for episode in episodes])
        return cls(observations, actions, rewards, episode_index, starts, episodes)

    @property
    def n_episodes(self) -> int:
        return len(self.episodes)

    @property
    def n_steps(self) -> int:
        return int(self.starts[-1])

    def episode_slice(self, episode: int) -> slice:
        """:return: the steps of one episode"""
        return slice(int(self.starts[episode]), int(self.starts[episode + 1]))

    def observations_of(self, index: slice | th.Tensor) -> TensorObservation:
        """:return: the observations of a subset of the steps"""
        if isinstance(self.observations, dict):
            return {key: obs[index] for key, obs in self.observations.items()}
        return self.observations[index]
