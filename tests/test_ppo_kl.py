"""PPOKL: a superset of SB3 PPO's constructor, the penalty, beta adapted once per update, state saved with the model."""

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_ppo_variants import PPOKL
from sb3_ppo_variants.ppo_kl.kl_control import AdaptiveKLController, ProportionalKLController
from tests.helpers import assert_signature_superset, learn_and_read_logs, silent_logger

FAST = dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]), seed=0)


def test_signature_is_superset_of_ppo():
    # the one deliberate difference: no clipping by default (the paper's pure penalty)
    assert_signature_superset(PPOKL, PPO, different_defaults={"clip_range": None})
    # PPO's parameters keep their order, ours come after them
    ppo, ours = inspect.signature(PPO).parameters, inspect.signature(PPOKL).parameters
    assert list(ours)[: len(ppo) - 1] == list(ppo)[:-1]


def test_clipping_is_off_unless_given():
    assert PPOKL("MlpPolicy", "CartPole-v1", **FAST).clip_range is None
    clipped = PPOKL("MlpPolicy", "CartPole-v1", clip_range=0.2, **FAST)
    assert clipped.clip_range(1.0) == pytest.approx(0.2)
    logs = learn_and_read_logs(clipped, 128)
    assert "train/clip_fraction" in logs and "train/clip_range" in logs


def test_beta_adapted_once_per_update_with_the_update_kl():
    model = PPOKL("MlpPolicy", "CartPole-v1", kl_target=0.005, **FAST)
    for _ in range(3):
        model.set_logger(silent_logger())
        model.learn(64, reset_num_timesteps=False)
        logs = model.logger.name_to_value
        beta, kl, beta_next = logs["train/kl_coef"], logs["train/policy_kl"], logs["train/kl_coef_next"]
        expected = beta / 2 if kl < 0.005 / 1.5 else beta * 2 if kl > 0.005 * 1.5 else beta
        assert beta_next == pytest.approx(expected)
        assert model.kl_control.kl_coef == beta_next


def test_penalty_uses_beta():
    model = PPOKL("MlpPolicy", "CartPole-v1", kl_controller="fixed", kl_coef=3.0, **FAST)
    logs = learn_and_read_logs(model, 128)
    assert logs["train/kl_coef"] == 3.0
    assert logs["train/kl_penalty"] > 0
    # policy loss = -surrogate + beta * KL, averaged over minibatches
    assert logs["train/policy_gradient_loss"] == pytest.approx(-logs["train/surrogate_objective"] + logs["train/kl_penalty"])


@pytest.mark.parametrize("kl_estimator", ["analytic", "sample"])
def test_kl_estimators_train(kl_estimator):
    model = PPOKL("MlpPolicy", "Pendulum-v1", kl_estimator=kl_estimator, **FAST)
    logs = learn_and_read_logs(model, 128)
    assert np.isfinite(logs["train/policy_kl"]) and logs["train/policy_kl"] >= 0


def test_controller_state_survives_save_load(tmp_path):
    model = PPOKL("MlpPolicy", "CartPole-v1", kl_controller="proportional", kl_gain=0.5, kl_target=0.002, **FAST)
    model.learn(192)
    state = model.kl_control.state()
    assert state["kl_coef"] != 1.0  # it moved
    model.save(tmp_path / "ppo_kl.zip")
    loaded = PPOKL.load(tmp_path / "ppo_kl.zip", env=model.get_env())
    assert isinstance(loaded.kl_control, ProportionalKLController)
    assert loaded.kl_control.state() == state
    # training continues from the saved beta
    loaded.set_logger(silent_logger())
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.logger.name_to_value["train/kl_coef"] == state["kl_coef"]
    assert loaded.num_timesteps == model.num_timesteps + 64


def test_continued_training_after_load_matches_uninterrupted(tmp_path):
    """learn(a); save; load; learn(b) gives the same parameters and beta as learn(a + b) (same RNG state)."""
    uninterrupted = PPOKL("MlpPolicy", "CartPole-v1", **FAST)
    uninterrupted.learn(128)
    np_state, th_state = np.random.get_state(), th.get_rng_state()
    uninterrupted.learn(128, reset_num_timesteps=False)

    first = PPOKL("MlpPolicy", "CartPole-v1", **FAST)
    first.learn(128)
    first.save(tmp_path / "half.zip")
    resumed = PPOKL.load(tmp_path / "half.zip", env=first.get_env())
    resumed._last_obs = first._last_obs  # the env carries on where it was
    resumed._last_episode_starts = first._last_episode_starts
    np.random.set_state(np_state)
    th.set_rng_state(th_state)
    resumed.learn(128, reset_num_timesteps=False)

    assert resumed.kl_control.state() == uninterrupted.kl_control.state()
    for p, q in zip(resumed.policy.parameters(), uninterrupted.policy.parameters(), strict=True):
        th.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_target=0.0), r"kl_target must be a finite number > 0"),
        (dict(kl_target=-1.0), r"kl_target must be a finite number > 0"),
        (dict(kl_coef=0.0), r"kl_coef must be a finite number > 0"),
        (dict(kl_coef=-2.0), r"kl_coef must be a finite number > 0"),
        (dict(kl_controller="pid"), r"kl_controller must be one of \('adaptive', 'fixed', 'proportional'\)"),
        (dict(kl_tolerance=1.0), r"kl_tolerance must be a finite number > 1"),
        (dict(kl_factor=1.0), r"kl_factor must be a finite number > 1"),
        (dict(kl_estimator="exact"), r"kl_estimator must be one of \('auto', 'analytic', 'sample'\)"),
        (dict(diagnostics="loud"), r"diagnostics must be one of \('off', 'basic', 'full'\)"),
    ],
)
def test_bad_arguments_raise_before_training(kwargs, message, monkeypatch):
    # nothing may be built or trained: fail if the environment is even created
    def no_env(*args, **kw):
        raise AssertionError("environment built before validation")

    monkeypatch.setattr(gym, "make", no_env)
    with pytest.raises(ValueError, match=message):
        PPOKL("MlpPolicy", "CartPole-v1", **kwargs)


def test_adaptive_is_the_default_controller():
    model = PPOKL("MlpPolicy", "CartPole-v1", **FAST)
    assert isinstance(model.kl_control, AdaptiveKLController)
    assert model.kl_control.kl_coef == 1.0 and model.kl_control.kl_target == 0.01


def test_default_clip_range_survives_a_round_trip_of_the_arguments():
    """The default means "no clipping" as a plain value: YAML/JSON/Optuna round trips and copies keep the algorithm."""
    import copy
    import json

    default = inspect.signature(PPOKL).parameters["clip_range"].default
    for value in (json.loads(json.dumps(default)), copy.deepcopy(default), default):
        assert PPOKL("MlpPolicy", "CartPole-v1", clip_range=value, **FAST).clip_range is None
