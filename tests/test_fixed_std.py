"""The fixed-std policy option (``policy_kwargs=dict(log_std_init=..., learn_std=False)``) of the four algorithms."""

import math

import pytest
import torch as th

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, PPOClip
from sb3_ppo_variants.common.policies import StdActorCriticPolicy

LOG_STD = 0.5 * math.log(0.5)  # the tutorial's fixed variance 0.5
ALGOS = [PPOClip, PPOKL, TRPOKL, REINFORCE]


def make(cls, fast=True, env="Pendulum-v1", **policy_kwargs):
    kwargs = dict(n_steps=200) if cls is REINFORCE else dict(n_steps=64)
    if cls in (PPOClip, PPOKL):
        kwargs["batch_size"] = 32
    policy_kwargs = dict(net_arch=[16], log_std_init=LOG_STD, learn_std=False) | policy_kwargs
    return cls("MlpPolicy", env, seed=0, fast=fast, policy_kwargs=policy_kwargs, **kwargs)


def state(model) -> list[th.Tensor]:
    return [tensor.detach().clone() for tensor in model.policy.state_dict().values()]


@pytest.mark.parametrize("cls", ALGOS)
def test_fixed_std_kept_through_training_and_save_load(cls, tmp_path):
    models = []
    for fast in (True, False):
        model = make(cls, fast=fast)
        assert isinstance(model.policy, StdActorCriticPolicy)
        assert "log_std" not in dict(model.policy.named_parameters())
        before = [p.detach().clone() for p in model.policy.parameters()]
        model.learn(400)
        # the std did not move, the other parameters did (the update ran)
        assert th.equal(model.policy.log_std, th.full((1,), LOG_STD))
        assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
        assert (model.fast_path_fallback("update") is None) == fast
        models.append(model)
    # the fast path handles it: the same numbers as SB3's code, bit for bit
    assert all(th.equal(a, b) for a, b in zip(state(models[0]), state(models[1]), strict=True))
    models[0].save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model", env=models[0].get_env())
    assert loaded.policy.learn_std is False
    assert all(th.equal(a, b) for a, b in zip(state(models[0]), state(loaded), strict=True))
    loaded.learn(200)  # training continues after load with the std still fixed
    assert th.equal(loaded.policy.log_std, th.full((1,), LOG_STD))


def test_learned_std_is_sb3s_policy_and_moves():
    model = make(PPOClip, learn_std=True)
    assert "log_std" in dict(model.policy.named_parameters())
    model.learn(128)
    assert not th.equal(model.policy.log_std.detach(), th.full((1,), LOG_STD))


def test_fixed_std_validated():
    with pytest.raises(TypeError, match=r"learn_std.*True or False"):
        make(PPOClip, learn_std=1)
    with pytest.raises(ValueError, match=r"learn_std'\]=False.*Box.*Discrete"):
        make(PPOClip, env="CartPole-v1")
    with pytest.raises(ValueError, match=r"learn_std'\]=False.*gSDE"):
        PPOClip("MlpPolicy", "Pendulum-v1", use_sde=True, policy_kwargs=dict(learn_std=False))
