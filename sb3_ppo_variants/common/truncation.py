"""Time-limit truncation treated as termination (``truncation_as_terminal=True``).

SB3's ``collect_rollouts`` bootstraps an episode cut by a time limit: where the VecEnv's info says
``TimeLimit.truncated`` (with a ``terminal_observation``), it adds ``gamma * V(terminal_observation)`` to the last
reward (SB3 issue #633). Many tutorials instead treat the end of a time-limited episode as a termination: no bootstrap,
the return of the last step is its reward. ``TruncationAsTermination`` wraps the VecEnv for one collection and reports
those episode ends as terminations (``TimeLimit.truncated`` False in a copy of the info, the original flag kept under
``"TimeLimit.truncated_as_terminal"``): SB3's loop and the fast path's then skip the bootstrap, and the episode
boundary (``done``) is unchanged, so the returns and advantages are those of a terminal step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

#: the info key where the wrapper keeps the original truncation flag
TRUNCATED_AS_TERMINAL = "TimeLimit.truncated_as_terminal"


class TruncationAsTermination:
    """
    A VecEnv seen through ``step`` with time-limit truncations reported as terminations; everything else is the
    wrapped VecEnv's (attribute access is forwarded).

    :param venv: the VecEnv
    """

    def __init__(self, venv: VecEnv) -> None:
        self.venv = venv

    def __getattr__(self, name: str) -> Any:
        return getattr(self.venv, name)

    def step(self, actions: np.ndarray) -> VecEnvStepReturn:
        """:return: the wrapped VecEnv's step, with the infos of truncated episodes copied and their flag cleared"""
        obs, rewards, dones, infos = self.venv.step(actions)
        for idx in np.flatnonzero(dones):
            if infos[idx].get("TimeLimit.truncated", False):
                infos[idx] = {**infos[idx], "TimeLimit.truncated": False, TRUNCATED_AS_TERMINAL: True}
        return obs, rewards, dones, infos
