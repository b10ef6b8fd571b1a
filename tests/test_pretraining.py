"""Behaviour cloning and the demonstrations recorder (sb3_ppo_variants.common.pretraining)."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, Demonstrations, PPOClip, behaviour_cloning, record_demonstrations
from sb3_ppo_variants.common.pretraining import demonstration_log_likelihood
from tests.helpers import learn_and_read_logs

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=64, seed=0)


class CartPoleExpert:
    """A hand-made CartPole controller: push toward the side the pole falls to (returns ~500)."""

    @staticmethod
    def action(obs: np.ndarray) -> np.ndarray:
        return (obs[..., 2] + 0.5 * obs[..., 3] > 0).astype(np.int64)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action(obs), state


class PendulumExpert:
    """A hand-made linear Pendulum controller (a torque from cos, sin and the angular velocity), clipped to [-2, 2]."""

    @staticmethod
    def action(obs: np.ndarray) -> np.ndarray:
        return np.clip(-(1.5 * obs[..., 1:2] + 0.5 * obs[..., 2:3]), -2.0, 2.0).astype(np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.action(obs), state


def test_recorder_records_what_a_hand_made_policy_does():
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_episodes=2, seed=0)
    assert len(demos.episode_returns) == 2 and len(demos) == demos.episode_lengths.sum()
    np.testing.assert_array_equal(demos.actions, CartPoleExpert.action(demos.observations))
    np.testing.assert_array_equal(demos.episode_returns, demos.episode_lengths)  # CartPole: reward 1 per step
    assert demos.episode_returns.min() > 100  # the controller balances
    # n_steps: exactly that many transitions, from the first reset of the seeded environment on
    steps = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_steps=30, seed=0)
    assert len(steps) == 30 and len(steps.episode_returns) == 0
    np.testing.assert_array_equal(steps.observations, demos.observations[:30])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_recorder_records_what_a_model_does(env_id):
    model = PPOClip("MlpPolicy", env_id, **SMALL)
    env = make_vec_env(env_id, n_envs=2, seed=1)
    demos = record_demonstrations(model, env, n_steps=250)
    predicted, _ = model.predict(demos.observations, deterministic=True)
    # the same actions (up to float32 round-off: a batch of 250 observations is not multiplied as batches of 2 are)
    np.testing.assert_allclose(demos.actions, predicted, rtol=1e-5, atol=1e-7)
    assert demos.actions.dtype == predicted.dtype
    # a sampled action is not the mode; episodes finished on both environments are counted
    sampled = record_demonstrations(model, make_vec_env(env_id, n_envs=2, seed=1), n_episodes=3, deterministic=False)
    assert len(sampled.episode_returns) == 3 and len(sampled) == sampled.episode_lengths.sum()
    assert not np.array_equal(sampled.actions, model.predict(sampled.observations, deterministic=True)[0])


def test_demonstrations_save_load(tmp_path):
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_episodes=1, seed=0)
    demos.save(tmp_path / "demos")
    loaded = Demonstrations.load(tmp_path / "demos.npz")
    for name in ("observations", "actions", "episode_returns", "episode_lengths"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(demos, name))
        assert getattr(loaded, name).dtype == getattr(demos, name).dtype
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        Demonstrations.load(tmp_path / "other.npz")


@pytest.mark.parametrize(
    ("algo", "env_id", "expert"),
    [
        (PPOClip, "CartPole-v1", CartPoleExpert),
        (PPOKL, "Pendulum-v1", PendulumExpert),
        (TRPOKL, "CartPole-v1", CartPoleExpert),
    ],
)
def test_behaviour_cloning_raises_the_likelihood_of_the_demonstrated_actions(algo, env_id, expert):
    demos = record_demonstrations(expert(), env_id, n_steps=400, seed=0)
    model = algo("MlpPolicy", env_id, **SMALL)
    value_before = [p.detach().clone() for p in model.policy.value_net.parameters()]
    optimizer_state = model.policy.optimizer.state_dict()
    training = model.policy.training
    before = demonstration_log_likelihood(model, demos)
    losses = behaviour_cloning(model, demos, n_epochs=15, batch_size=64, learning_rate=1e-2, seed=0)
    after = demonstration_log_likelihood(model, demos)
    assert len(losses) == 15 and losses[-1] < losses[0]
    assert after > before + 0.2, (before, after)
    # the mean loss of the last epoch is the negative log-likelihood during that epoch, close to the final one
    assert abs(losses[-1] + after) < 0.2
    # nothing but the actor is fitted: the value head and the policy's own optimizer are untouched
    for old, new in zip(value_before, model.policy.value_net.parameters(), strict=True):
        assert th.equal(old, new)
    assert model.policy.optimizer.state_dict() == optimizer_state
    assert model.policy.training == training


def test_behaviour_cloning_is_reproducible_with_a_seed_and_shows_a_progress_bar():
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_steps=200, seed=0)
    first, second = (REINFORCE("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[16]), seed=0) for _ in range(2))
    losses = behaviour_cloning(first, demos, n_epochs=2, seed=3)
    assert behaviour_cloning(second, demos, n_epochs=2, seed=3, progress_bar=True) == losses
    for a, b in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert th.equal(a, b)


def test_bad_arguments_name_the_argument():
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_steps=20, seed=0)
    model = PPOClip("MlpPolicy", "CartPole-v1", **SMALL)
    with pytest.raises(ValueError, match="n_epochs must be an integer >= 1"):
        behaviour_cloning(model, demos, n_epochs=0)
    with pytest.raises(TypeError, match="batch_size"):
        behaviour_cloning(model, demos, batch_size=1.5)
    with pytest.raises(ValueError, match="learning_rate"):
        behaviour_cloning(model, demos, learning_rate=0.0)
    with pytest.raises(ValueError, match="ent_coef"):
        behaviour_cloning(model, demos, ent_coef=-1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        behaviour_cloning(model, demos, max_grad_norm=0.0)
    with pytest.raises(TypeError, match="ActorCriticPolicy"):
        behaviour_cloning(object(), demos)
    with pytest.raises(TypeError, match="demonstrations must be a Demonstrations"):
        behaviour_cloning(model, {"observations": demos.observations})
    pendulum = record_demonstrations(PendulumExpert(), "Pendulum-v1", n_steps=20, seed=0)
    with pytest.raises(ValueError, match="observations of shape"):
        behaviour_cloning(model, pendulum)
    bad_actions = Demonstrations(demos.observations, demos.actions + 2, demos.episode_returns, demos.episode_lengths)
    with pytest.raises(ValueError, match="actions of shape"):
        behaviour_cloning(model, bad_actions)
    with pytest.raises(ValueError, match="at least one transition"):
        behaviour_cloning(model, Demonstrations(demos.observations[:0], demos.actions[:0], np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="same length"):
        Demonstrations(demos.observations, demos.actions[:-1], demos.episode_returns, demos.episode_lengths)
    with pytest.raises(ValueError, match="exactly one of n_episodes and n_steps"):
        record_demonstrations(CartPoleExpert(), "CartPole-v1", n_episodes=1, n_steps=10)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        record_demonstrations(CartPoleExpert(), "CartPole-v1", n_steps=0)
    with pytest.raises(TypeError, match="predict"):
        record_demonstrations(object(), "CartPole-v1", n_steps=10)
    with pytest.raises(TypeError, match="env must be"):
        record_demonstrations(CartPoleExpert(), 3, n_steps=10)


@pytest.mark.slow
def test_behaviour_cloning_reaches_the_experts_return_on_cartpole():
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_episodes=2, seed=0)
    model = PPOClip("MlpPolicy", "CartPole-v1", seed=0)
    behaviour_cloning(model, demos, n_epochs=20, seed=0)
    returns, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=7), n_eval_episodes=5)
    assert returns >= 450


@pytest.mark.parametrize("route", ["initial", "zip"])
def test_demonstrations_to_behaviour_cloning_to_fine_tuning_with_kl_to_the_clone(route, tmp_path):
    """The end-to-end path: demonstrations -> BC -> RL fine-tuning with a KL term toward the cloned policy."""
    demos = record_demonstrations(CartPoleExpert(), "CartPole-v1", n_steps=300, seed=0)
    demos.save(tmp_path / "demos.npz")
    demos = Demonstrations.load(tmp_path / "demos.npz")
    if route == "initial":  # clone into the model itself: its policy at the first learn() is the reference
        model = PPOClip("MlpPolicy", "CartPole-v1", ref_policy="initial", ref_kl_coef=0.1, **SMALL)
        behaviour_cloning(model, demos, n_epochs=5, learning_rate=1e-2, seed=0)
    else:  # clone, save, fine-tune a new model from the saved clone
        clone = PPOClip("MlpPolicy", "CartPole-v1", **SMALL)
        behaviour_cloning(clone, demos, n_epochs=5, learning_rate=1e-2, seed=0)
        clone.save(tmp_path / "clone.zip")
        model = PPOClip(
            "MlpPolicy", "CartPole-v1", ref_policy=tmp_path / "clone.zip", ref_kl_coef=0.1, init_from_ref=True, **SMALL
        )
    cloned = demonstration_log_likelihood(model, demos)
    assert cloned > -0.5  # the fine-tuning starts from the clone
    logs = learn_and_read_logs(model, 128)
    assert model.reference is not None
    assert demonstration_log_likelihood(model.reference.policy, demos) == pytest.approx(cloned, abs=1e-6)
    assert logs["train/ref_kl_coef"] == 0.1 and 0.0 < logs["train/ref_kl"] < 0.1
