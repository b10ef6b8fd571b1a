"""Drop-in behaviour of the PPO-family algorithms: action spaces, Dict observations, save/load, callbacks, VecNormalize."""

import numpy as np
import pytest
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ppo_variants import PPOKL, PPOClip
from tests.helpers import learn_and_read_logs

ALGOS = [PPOKL, PPOClip]
FAST = dict(n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]), seed=0)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(
    "env",
    [IdentityEnv(2), IdentityEnvBox(-1, 1), IdentityEnvMultiDiscrete(2), IdentityEnvMultiBinary(2)],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary"],
)
def test_action_spaces_train_and_log(algo, env):
    model = algo("MlpPolicy", env, **FAST)
    logs = learn_and_read_logs(model, 256)
    for key in ("policy_kl", "approx_kl", "ratio_mean", "ratio_std", "ratio_min", "ratio_max", "ess", "grad_norm", "grad_snr"):
        assert np.isfinite(logs[f"train/{key}"]), key
    assert logs["train/policy_kl"] >= 0
    assert 0 < logs["train/ess"] <= 1


@pytest.mark.parametrize("algo", ALGOS)
def test_dict_observations(algo):
    model = algo("MultiInputPolicy", SimpleMultiObsEnv(random_start=False), **FAST)
    logs = learn_and_read_logs(model, 128)
    assert np.isfinite(logs["train/policy_kl"])


@pytest.mark.parametrize("algo", ALGOS)
def test_cnn_policy(algo):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    model = algo("CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0)
    model.learn(32)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_save_load_predict_identical(algo, env_id, tmp_path):
    model = algo("MlpPolicy", env_id, **FAST)
    model.learn(128)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip")
    obs = np.stack([model.observation_space.sample() for _ in range(20)])
    actions, _ = model.predict(obs, deterministic=True)
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    assert loaded.diagnostics == model.diagnostics


@pytest.mark.parametrize("algo", ALGOS)
def test_callbacks_vecnormalize_progress_bar_tensorboard(algo, tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = algo("MlpPolicy", env, tensorboard_log=str(tmp_path / "tb"), **FAST)
    model.learn(256, callback=CheckpointCallback(64, str(tmp_path / "ckpt")), progress_bar=True)
    assert list((tmp_path / "ckpt").glob("*.zip"))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("level", ["off", "basic", "full"])
def test_diagnostics_levels_keys(algo, level):
    model = algo("MlpPolicy", "CartPole-v1", diagnostics=level, **FAST)
    logs = learn_and_read_logs(model, 128)
    assert ("train/policy_kl" in logs) == (level != "off")
    assert ("train/grad_snr" in logs) == (level != "off")
    assert ("train/policy_kl_max" in logs) == (level == "full")
    # SB3 PPO's own keys are always there
    for key in ("entropy_loss", "policy_gradient_loss", "value_loss", "approx_kl", "loss", "explained_variance", "n_updates"):
        assert f"train/{key}" in logs


@pytest.mark.parametrize("algo", ALGOS)
def test_bad_diagnostics_level(algo):
    with pytest.raises(ValueError, match=r"diagnostics must be one of \('off', 'basic', 'full'\), got 'all'"):
        algo("MlpPolicy", "CartPole-v1", diagnostics="all")
