"""Numerical guards: NaN rewards / observations / losses never produce non-finite weights; same seed, same result."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, PPOClip
from tests.helpers import policy_params

FAST = {
    PPOKL: dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16])),
    PPOClip: dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16])),
    TRPOKL: dict(n_steps=64, batch_size=32, cg_max_steps=5, policy_kwargs=dict(net_arch=[16])),
    REINFORCE: dict(n_steps=64, policy_kwargs=dict(net_arch=[16])),
}
ALGOS = list(FAST)


class Corrupt(gym.Wrapper):
    """Make the reward or the observation NaN every ``every`` steps."""

    def __init__(self, env: gym.Env, what: str, every: int) -> None:
        super().__init__(env)
        self.what, self.every, self.count = what, every, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        if self.count % self.every == 0:
            if self.what == "reward":
                reward = float("nan")
            else:
                obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


def assert_finite(model) -> None:
    for name, parameter in model.policy.named_parameters():
        assert th.isfinite(parameter).all(), name


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_nan_rewards_skip_steps_and_keep_weights_finite(algo, env_id, tmp_path):
    model = algo("MlpPolicy", Corrupt(gym.make(env_id), "reward", every=50), seed=0, **FAST[algo])
    with pytest.warns(UserWarning, match="non-finite"):
        model.learn(256)
    skipped = model.nonfinite_guard.n_skipped
    assert skipped > 0
    assert_finite(model)
    model.save(tmp_path / "model.zip")
    assert_finite(algo.load(tmp_path / "model.zip"))


@pytest.mark.parametrize("algo", ALGOS)
def test_nan_observation_stops_with_a_clear_error(algo):
    model = algo("MlpPolicy", Corrupt(gym.make("Pendulum-v1"), "observation", every=70), seed=0, **FAST[algo])
    before = policy_params(model)
    with pytest.raises(ValueError, match=r"non-finite observation.*VecCheckNan"):
        model.learn(256)
    assert_finite(model)
    assert model.num_timesteps < 256
    assert th.isfinite(before).all() and th.isfinite(policy_params(model)).all()


@pytest.mark.parametrize("algo", [PPOKL, PPOClip])
def test_forced_nonfinite_loss_is_skipped(algo, monkeypatch):
    model = algo("MlpPolicy", "CartPole-v1", seed=0, **FAST[algo])
    original = model._policy_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, extras = original(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("inf") if calls["n"] == 2 else loss), extras

    monkeypatch.setattr(model, "_policy_loss", sometimes_nan)
    with pytest.warns(UserWarning, match="step skipped"):
        model.learn(64)
    assert model.nonfinite_guard.n_skipped == 1
    assert_finite(model)


def test_forced_nonfinite_surrogate_is_skipped_by_trpo(monkeypatch):
    model = TRPOKL("MlpPolicy", "CartPole-v1", seed=0, **FAST[TRPOKL])
    model.learn(64)  # one update to set everything up
    actor_before = {n: p.detach().clone() for n, p in model.policy.named_parameters() if "value" not in n}
    monkeypatch.setattr(model.policy, "get_distribution", lambda obs: _nan_distribution(model, obs))
    with pytest.warns(UserWarning, match="non-finite"):
        model.learn(64, reset_num_timesteps=False)
    assert model.nonfinite_guard.n_skipped >= 1
    for name, parameter in model.policy.named_parameters():
        if "value" not in name:
            th.testing.assert_close(parameter, actor_before[name], rtol=0, atol=0)
    assert_finite(model)


def _nan_distribution(model, obs):
    """The policy's distribution with NaN logits (validation off, as a broken network would give)."""
    features = model.policy.extract_features(obs, model.policy.pi_features_extractor)
    latent_pi = model.policy.mlp_extractor.forward_actor(features)
    logits = model.policy.action_net(latent_pi) * float("nan")
    distribution = model.policy.action_dist
    distribution.distribution = th.distributions.Categorical(logits=logits, validate_args=False)
    return distribution


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_result(algo):
    first = algo("MlpPolicy", "Pendulum-v1", seed=7, **FAST[algo])
    first.learn(192)
    second = algo("MlpPolicy", "Pendulum-v1", seed=7, **FAST[algo])
    second.learn(192)
    th.testing.assert_close(policy_params(first), policy_params(second), rtol=0, atol=0)
