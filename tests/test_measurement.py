"""The measurement layer cannot change what is learned: every diagnostics level learns the same parameters, also
with a policy whose features extractor has dropout (random draws in train mode), and PPOClip / TRPOKL learn exactly
what SB3 PPO / sb3-contrib TRPO learn (``torch.equal``)."""

import gymnasium as gym
import pytest
import torch as th
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, PPOClip
from tests.helpers import policy_params, silent_logger

LEVELS = ["off", "basic", "full"]
ENVS = ["CartPole-v1", "Pendulum-v1"]


class DropoutExtractor(BaseFeaturesExtractor):
    """Flatten, a linear layer and dropout: forward passes in train mode draw from torch's random generator."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 16, p: float = 0.2):
        super().__init__(observation_space, features_dim)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(gym.spaces.flatdim(observation_space), features_dim), nn.Dropout(p))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


def policy_kwargs(dropout: bool) -> dict:
    kwargs: dict = dict(net_arch=[16])
    if dropout:
        kwargs["features_extractor_class"] = DropoutExtractor
    return kwargs


PPO_SETTINGS = dict(n_steps=64, batch_size=32, n_epochs=3, seed=3)
TRPO_SETTINGS = dict(n_steps=64, batch_size=32, cg_max_steps=5, seed=0)


# ours, the peer, settings, updates after 3 rollouts (PPO: 3 epochs each)
PEERS = [(PPOClip, PPO, PPO_SETTINGS, 3 * 3), (TRPOKL, TRPO, TRPO_SETTINGS, 3)]


@pytest.mark.parametrize("dropout", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("ours, peer, settings, n_updates", PEERS, ids=["PPOClip-PPO", "TRPOKL-TRPO"])
def test_same_parameters_as_the_peer_at_every_level(ours, peer, settings, n_updates, env_id, dropout):
    reference = peer("MlpPolicy", env_id, policy_kwargs=policy_kwargs(dropout), **settings).learn(3 * 64)
    for level in LEVELS:
        model = ours("MlpPolicy", env_id, diagnostics=level, policy_kwargs=policy_kwargs(dropout), **settings)
        model.learn(3 * 64)
        assert model._n_updates == reference._n_updates == n_updates
        assert th.equal(policy_params(model), policy_params(reference)), level


def _same_parameters_at_every_level(make) -> None:
    params = [policy_params(make(level)) for level in LEVELS]
    for level, learned in zip(LEVELS[1:], params[1:], strict=True):
        assert th.equal(learned, params[0]), level


@pytest.mark.parametrize("env_id", ENVS)
def test_ppo_kl_same_parameters_at_every_level_with_dropout(env_id):
    def make(level):
        return PPOKL("MlpPolicy", env_id, diagnostics=level, policy_kwargs=policy_kwargs(True), **PPO_SETTINGS).learn(3 * 64)

    _same_parameters_at_every_level(make)


@pytest.mark.parametrize("baseline", ["none", "value", "optimal"])
@pytest.mark.parametrize("env_id", ENVS)
def test_reinforce_same_parameters_at_every_level_with_dropout(env_id, baseline):
    def make(level):
        model = REINFORCE(
            "MlpPolicy", env_id, n_steps=200, baseline=baseline, diagnostics=level, policy_kwargs=policy_kwargs(True), seed=1
        )
        return model.learn(600)

    _same_parameters_at_every_level(make)


def test_measurement_restores_training_mode_and_random_state():
    from sb3_ppo_variants.common.diagnostics import OldPolicy

    model = PPOClip("MlpPolicy", "CartPole-v1", policy_kwargs=policy_kwargs(True), **PPO_SETTINGS)
    observations = th.zeros(5, 4)
    actions = th.zeros(5, dtype=th.long)
    model.policy.set_training_mode(True)
    state = th.random.get_rng_state()
    old = OldPolicy(model.policy, observations, actions, None, "analytic")
    change = old.measure(model.policy)
    assert model.policy.training
    assert th.equal(th.random.get_rng_state(), state)
    # nothing moved between the two measurements: zero KL, ratios of one
    assert th.equal(change.kl, th.zeros(5)) and th.equal(change.log_ratio, th.zeros(5))


ONE_STEP = [
    (TRPOKL, dict(n_steps=64, batch_size=32, cg_max_steps=5, seed=0)),
    (REINFORCE, dict(n_steps=64, baseline="value", seed=0)),
]


@pytest.mark.parametrize("algo, settings", ONE_STEP, ids=["TRPOKL", "REINFORCE"])
def test_each_update_logs_its_own_ratio_statistics(algo, settings):
    """
    The algorithms with one step on the whole batch log the ratios after that step, of each update: their measurement
    once kept the first update's ratios (nothing reset them), so ``ratio_*`` and ``ess`` stayed at the first update's
    values through a whole run while ``policy_kl`` moved.
    """
    from sb3_ppo_variants.common.diagnostics import RatioStatistics

    model = algo("MlpPolicy", "CartPole-v1", diagnostics="basic", policy_kwargs=dict(net_arch=[16]), **settings)
    model.set_logger(silent_logger())
    expected, logged = [], []
    record = model._measurement.record

    def record_and_read(logger, change, *args, **kwargs):
        statistics = RatioStatistics()  # the ratios of this update's change, by themselves
        statistics.add(th.exp(change.log_ratio), change.log_ratio)
        expected.append(statistics.summary())
        record(logger, change, *args, **kwargs)
        logged.append({key: logger.name_to_value[f"train/{key}"] for key in expected[-1]})

    model._measurement.record = record_and_read
    model.learn(4 * 64)
    assert len(logged) == model._n_updates >= 3
    assert logged == expected
    assert len({values["ratio_std"] for values in logged}) == len(logged)  # the updates differ
