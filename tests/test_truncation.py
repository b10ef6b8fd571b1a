"""``truncation_as_terminal``: a time-limit truncation ends the episode without the bootstrap SB3 adds."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_ppo_variants import PPOKL, TRPOKL, PPOClip

GAMMA = 0.9
N_STEPS = 12
EPISODE = 5  # time limit: truncations after steps 4 and 9, the buffer ends inside the third episode


class Recorder(gym.Wrapper):
    """Keeps every reward and every observation the environment returned."""

    def __init__(self, env):
        super().__init__(env)
        self.rewards, self.observations = [], []

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.rewards.append(float(reward))
        self.observations.append(obs)
        return obs, reward, terminated, truncated, info


def collected(cls, truncation_as_terminal=None, fast=True, gae_lambda=1.0):
    """Build a model on a 5-step Pendulum and run one collection (no update): the model, its buffer, the recorder."""
    recorder = Recorder(gym.make("Pendulum-v1", max_episode_steps=EPISODE))
    kwargs = dict(n_steps=N_STEPS, gamma=GAMMA, gae_lambda=gae_lambda, seed=0, policy_kwargs=dict(net_arch=[8]))
    if cls is not PPO:
        kwargs.update(fast=fast)
        if truncation_as_terminal is not None:
            kwargs.update(truncation_as_terminal=truncation_as_terminal)
    if cls is not TRPOKL:
        kwargs.update(batch_size=N_STEPS)
    model = cls("MlpPolicy", DummyVecEnv([lambda: recorder]), **kwargs)
    _, callback = model._setup_learn(N_STEPS, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=N_STEPS)
    return model, model.rollout_buffer, recorder


def value(model, obs) -> float:
    with th.no_grad():
        return model.policy.predict_values(model.policy.obs_to_tensor(obs)[0]).item()


def monte_carlo_returns(rewards, ends, last_value):
    """G_t = r_t + gamma G_{t+1} inside an episode; an episode cut by the buffer's end is bootstrapped with last_value."""
    returns, following = np.zeros(len(rewards)), last_value
    for t in reversed(range(len(rewards))):
        following = rewards[t] + (0.0 if t in ends else GAMMA * following)
        returns[t] = following
    return returns


@pytest.mark.parametrize("fast", [True, False])
def test_returns_and_advantages_as_computed_by_hand(fast):
    terminal, buffer_on, recorder = collected(PPOClip, truncation_as_terminal=True, fast=fast)
    bootstrap, buffer_off, _ = collected(PPOClip, truncation_as_terminal=False, fast=fast)
    ends = {EPISODE - 1, 2 * EPISODE - 1}
    rewards = np.array(recorder.rewards)
    # the same trajectory (same seed, same policy): only the rewards of the truncated steps differ
    assert np.array_equal(buffer_on.observations, buffer_off.observations)
    # on: the buffer keeps the environment's rewards, off: SB3's bootstrap r + gamma V(terminal observation)
    assert np.array_equal(buffer_on.rewards.ravel(), rewards.astype(np.float32))
    bootstrap_values = {t: value(bootstrap, recorder.observations[t]) for t in ends}
    expected_off = rewards.copy()
    for t, v in bootstrap_values.items():
        expected_off[t] += GAMMA * v
    np.testing.assert_allclose(buffer_off.rewards.ravel(), expected_off, rtol=1e-6)
    unchanged = [t for t in range(N_STEPS) if t not in ends]
    assert np.array_equal(buffer_on.rewards.ravel()[unchanged], buffer_off.rewards.ravel()[unchanged])
    # returns (gae_lambda=1: Monte-Carlo) and advantages = returns - V(s_t), by hand
    last_value = value(terminal, recorder.observations[-1])
    returns_on = monte_carlo_returns(rewards, ends, last_value)
    returns_off = monte_carlo_returns(expected_off, ends, last_value)
    np.testing.assert_allclose(buffer_on.returns.ravel(), returns_on, rtol=1e-5)
    np.testing.assert_allclose(buffer_off.returns.ravel(), returns_off, rtol=1e-5)
    np.testing.assert_allclose(buffer_on.advantages.ravel(), returns_on - buffer_on.values.ravel(), rtol=1e-5, atol=1e-5)
    # the difference is exactly the discounted bootstrap, in the truncated episodes only
    difference = buffer_off.returns.ravel() - buffer_on.returns.ravel()
    expected_difference = [
        GAMMA ** (min(t for t in ends if t >= s) - s) * GAMMA * bootstrap_values[min(t for t in ends if t >= s)]
        if s <= max(ends)
        else 0.0
        for s in range(N_STEPS)
    ]
    np.testing.assert_allclose(difference, expected_difference, rtol=1e-4, atol=1e-6)


def test_off_is_sb3s_collection_and_fast_path_matches_standard():
    _, sb3, _ = collected(PPO)
    _, default, _ = collected(PPOClip)
    for name in ("rewards", "returns", "advantages", "values", "log_probs"):
        assert np.array_equal(getattr(sb3, name), getattr(default, name)), name
    _, fast, _ = collected(PPOClip, truncation_as_terminal=True, fast=True, gae_lambda=0.95)
    _, standard, _ = collected(PPOClip, truncation_as_terminal=True, fast=False, gae_lambda=0.95)
    for name in ("rewards", "returns", "advantages"):
        assert np.array_equal(getattr(fast, name), getattr(standard, name)), name


@pytest.mark.parametrize("cls", [PPOKL, TRPOKL])
def test_other_algorithms_skip_the_bootstrap(cls, tmp_path):
    model, buffer, recorder = collected(cls, truncation_as_terminal=True)
    assert np.array_equal(buffer.rewards.ravel(), np.array(recorder.rewards, dtype=np.float32))
    model.save(tmp_path / "model")
    assert cls.load(tmp_path / "model").truncation_as_terminal is True


def test_truncation_as_terminal_validated():
    with pytest.raises(TypeError, match="truncation_as_terminal must be True or False"):
        PPOClip("MlpPolicy", "Pendulum-v1", truncation_as_terminal="yes")
