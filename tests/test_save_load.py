"""Save and load across SB3: our zips load into the peers and the peers' into ours; PPOKL's controller on load."""

import warnings

import numpy as np
import pytest
import torch as th
from sb3_contrib import TRPO
from stable_baselines3 import PPO

from sb3_ppo_variants import PPOKL, TRPOKL, PPOClip
from tests.helpers import policy_params

FAST = dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]), seed=0)
TRPO_FAST = dict(n_steps=64, batch_size=32, cg_max_steps=5, policy_kwargs=dict(net_arch=[16]), seed=0)

PAIRS = [
    (PPOClip, PPO, FAST),
    (PPOKL, PPO, FAST),
    (TRPOKL, TRPO, TRPO_FAST),
]


def _same_predictions(first, second) -> None:
    observations = np.stack([first.observation_space.sample() for _ in range(16)])
    np.testing.assert_array_equal(
        first.predict(observations, deterministic=True)[0], second.predict(observations, deterministic=True)[0]
    )


@pytest.mark.parametrize("ours, peer, settings", PAIRS, ids=["PPOClip-PPO", "PPOKL-PPO", "TRPOKL-TRPO"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_zips_load_both_ways_and_keep_training(ours, peer, settings, env_id, tmp_path):
    for saver, loader in ((ours, peer), (peer, ours)):
        model = saver("MlpPolicy", env_id, **settings).learn(64)
        path = tmp_path / f"{saver.__name__}.zip"
        model.save(path)
        with warnings.catch_warnings(record=True):  # the PPO -> PPOKL warning is tested below
            loaded = loader.load(path, env=model.get_env())
        assert type(loaded) is loader
        assert th.equal(policy_params(loaded), policy_params(model))
        _same_predictions(model, loaded)
        loaded.learn(64)  # and it trains on


def test_ppo_kl_zip_loads_into_ppo_as_clipped_ppo(tmp_path):
    model = PPOKL("MlpPolicy", "CartPole-v1", **FAST).learn(64)
    assert model.clip_range is None
    model.save(tmp_path / "ppo_kl.zip")
    loaded = PPO.load(tmp_path / "ppo_kl.zip")
    assert loaded.clip_range(1.0) == 0.2  # PPO's default: PPOKL's "no clipping" is not saved as a value PPO would misread
    # a clipped PPOKL keeps its clip range in PPO
    PPOKL("MlpPolicy", "CartPole-v1", clip_range=0.3, **FAST).save(tmp_path / "clipped.zip")
    assert PPO.load(tmp_path / "clipped.zip").clip_range(1.0) == pytest.approx(0.3)
    assert PPOKL.load(tmp_path / "clipped.zip").clip_range(1.0) == pytest.approx(0.3)


def test_ppo_zip_loads_into_ppo_kl_without_clipping_unless_asked(tmp_path):
    PPO("MlpPolicy", "CartPole-v1", **FAST).save(tmp_path / "ppo.zip")
    with pytest.warns(UserWarning, match="clip_range is dropped"):
        plain = PPOKL.load(tmp_path / "ppo.zip")
    assert plain.clip_range is None
    kept = PPOKL.load(tmp_path / "ppo.zip", clip_range=0.2)
    assert kept.clip_range(1.0) == pytest.approx(0.2)


def test_load_with_kl_arguments_reconfigures_the_controller(tmp_path):
    model = PPOKL("MlpPolicy", "CartPole-v1", kl_controller="fixed", kl_coef=3.0, **FAST)
    model.kl_control.kl_coef = 0.25  # as if adapted during training
    model.save(tmp_path / "m.zip")
    # nothing given: the saved controller and beta
    same = PPOKL.load(tmp_path / "m.zip")
    assert same.kl_control.name == "fixed" and same.kl_control.kl_coef == 0.25
    # a new target and rule: beta kept, the settings and the attributes are the ones used
    changed = PPOKL.load(tmp_path / "m.zip", kl_target=0.02, kl_controller="proportional", kl_gain=0.2)
    assert changed.kl_control.name == "proportional" and changed.kl_control.kl_target == 0.02 == changed.kl_target
    assert changed.kl_control.gain == 0.2 and changed.kl_control.kl_coef == 0.25
    # kl_coef given: it is the new beta
    assert PPOKL.load(tmp_path / "m.zip", kl_coef=1.0).kl_control.kl_coef == 1.0
    # bad values are rejected by name
    with pytest.raises(ValueError, match="kl_target"):
        PPOKL.load(tmp_path / "m.zip", kl_target=-1.0)
    with pytest.raises(ValueError, match="kl_controller"):
        PPOKL.load(tmp_path / "m.zip", kl_controller="pid")


def test_beta_is_held_while_the_learning_rate_is_annealed():
    from sb3_ppo_variants.ppo_kl.kl_control import make_kl_controller

    controller = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, kl_hold_lr_fraction=0.1)
    # far below target: halved while the learning rate is at least 10 % of its start ...
    assert controller.update(0.0, lr_fraction=0.5) == 0.5
    assert controller.update(0.0, lr_fraction=0.1) == 0.25
    # ... held below it, but still raised when the KL is too large
    assert controller.update(0.0, lr_fraction=0.05) == 0.25 and controller.n_held == 1
    assert controller.update(1.0, lr_fraction=0.05) == 0.5
