"""PPOClip learns exactly what SB3 PPO learns, whatever the diagnostics level, and accepts PPO's constructor."""

import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_ppo_variants import PPOClip
from tests.helpers import assert_signature_superset, learn_and_read_logs, policy_params

SETTINGS = dict(n_steps=64, batch_size=32, n_epochs=3, policy_kwargs=dict(net_arch=[32]), seed=3)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("level", ["off", "basic", "full"])
def test_same_parameters_as_sb3_ppo_after_three_updates(env_id, level):
    reference = PPO("MlpPolicy", env_id, **SETTINGS)
    reference.learn(3 * 64)
    ours = PPOClip("MlpPolicy", env_id, diagnostics=level, **SETTINGS)
    ours.learn(3 * 64)
    assert ours._n_updates == reference._n_updates == 3 * 3
    assert th.equal(policy_params(ours), policy_params(reference))


def test_same_parameters_with_target_kl_early_stopping_and_vf_clipping():
    settings = SETTINGS | dict(target_kl=0.001, clip_range_vf=0.1, n_epochs=10)
    reference = PPO("MlpPolicy", "CartPole-v1", **settings)
    reference.learn(3 * 64)
    ours = PPOClip("MlpPolicy", "CartPole-v1", **settings)
    ours.learn(3 * 64)
    assert ours._n_updates == reference._n_updates
    assert th.equal(policy_params(ours), policy_params(reference))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_parameters_with_and_without_entropy_bonus(env_id):
    """ent_coef = 0 leaves the entropy out of the graph (SB3 adds 0 * entropy): still bit-identical to PPO."""
    for ent_coef in (0.0, 0.01):
        reference = PPO("MlpPolicy", env_id, ent_coef=ent_coef, **SETTINGS)
        reference.learn(3 * 64)
        ours = PPOClip("MlpPolicy", env_id, ent_coef=ent_coef, diagnostics="off", **SETTINGS)
        ours.learn(3 * 64)
        assert th.equal(policy_params(ours), policy_params(reference)), f"ent_coef={ent_coef}"


def test_signature_is_superset_of_ppo():
    assert_signature_superset(PPOClip, PPO)


def test_clip_fractions_split_low_and_high():
    logs = learn_and_read_logs(PPOClip("MlpPolicy", "CartPole-v1", **SETTINGS | dict(n_epochs=10, learning_rate=3e-3)), 192)
    assert logs["train/clip_fraction"] == pytest.approx(logs["train/clip_fraction_low"] + logs["train/clip_fraction_high"])
    assert logs["train/clip_fraction"] > 0


def test_clip_range_none_rejected():
    with pytest.raises(TypeError, match=r"clip_range must be a positive finite number or a schedule \(callable\), got None"):
        PPOClip("MlpPolicy", "CartPole-v1", clip_range=None)


@pytest.mark.integration
def test_construction_survives_a_new_ppo_argument():
    """A 2.x release of SB3 adding an argument to PPO must not break PPOClip/PPOKL (fresh interpreter: the package is
    imported after PPO changed, as after an upgrade)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import functools, inspect
        import stable_baselines3
        from stable_baselines3 import PPO

        original = PPO.__init__

        @functools.wraps(original)
        def __init__(self, *args, new_argument=None, **kwargs):
            original(self, *args, **kwargs)

        signature = inspect.signature(original)
        extra = inspect.Parameter("new_argument", inspect.Parameter.KEYWORD_ONLY, default=None)
        __init__.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
        PPO.__init__ = __init__

        from sb3_ppo_variants import PPOKL, PPOClip

        for algo in (PPOClip, PPOKL):
            algo("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32).learn(64)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
