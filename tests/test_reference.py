"""The reference-policy KL term (issue 13): its values by hand, every algorithm x placement x space, save/load/resume,
the checks, and the zoo route (``ref_policy`` from the command line)."""

import math
import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, PPOClip
from sb3_ppo_variants.common.reference import ReferenceTerm, sample_kl
from tests.helpers import learn_and_read_logs, policy_params, silent_logger

NET = dict(net_arch=[16])
SETTINGS = {
    PPOClip: dict(n_steps=64, batch_size=32, n_epochs=2),
    PPOKL: dict(n_steps=64, batch_size=32, n_epochs=2),
    TRPOKL: dict(n_steps=64, batch_size=32, cg_max_steps=5),
    REINFORCE: dict(n_steps=64),
}
ALGOS = list(SETTINGS)


def make(cls, env_id="CartPole-v1", seed=0, **kwargs):
    return cls("MlpPolicy", env_id, policy_kwargs=NET, seed=seed, **SETTINGS[cls], **kwargs)


def set_constant_policy(model, bias, log_std=None):
    """Make the actor's output independent of the state: action_net weights 0, the given bias (and log std)."""
    with th.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(th.as_tensor(bias))
        if log_std is not None:
            model.policy.log_std.copy_(th.as_tensor(log_std))


# ----- values by hand --------------------------------------------------------------------------------------------


def test_sample_estimators_by_hand():
    log_ratio = th.tensor([0.5, -0.2])
    assert th.equal(sample_kl(log_ratio, "k1"), log_ratio)
    th.testing.assert_close(sample_kl(log_ratio, "k3"), th.exp(-log_ratio) - 1 + log_ratio)
    th.testing.assert_close(sample_kl(log_ratio, "abs"), th.tensor([0.5, 0.2]))
    th.testing.assert_close(sample_kl(log_ratio, "mse"), th.tensor([0.125, 0.02]))


@pytest.mark.parametrize("cls", [PPOClip, TRPOKL, REINFORCE])
def test_reference_equal_to_the_policy_has_zero_kl_and_leaves_the_rewards(cls):
    """ref_policy="initial" is the policy of the first update: ref_kl is exactly 0, the shaped reward is the raw one."""
    updates, models = {}, {}
    for name, kwargs in (("plain", {}), ("shaped", dict(ref_policy="initial", ref_kl_coef=1.0, ref_kl_estimator="abs"))):
        # built and trained one after the other: SB3 seeds the global random state at construction
        model = models[name] = make(cls, diagnostics="off", **kwargs)
        model.set_logger(silent_logger())
        if isinstance(model, REINFORCE):
            original = model.compute_returns
            model.compute_returns = lambda batch, original=original, name=name: updates.setdefault(name, original(batch))
        model.learn(64)
    plain, shaped = models["plain"], models["shaped"]
    logs = shaped.logger.name_to_value
    assert logs["train/ref_kl"] == 0.0
    # |log pi_old - log pi_ref|: the rollout's log-probabilities against a batched forward pass (rounding only)
    assert abs(logs["train/ref_kl_reward"]) < 1e-6
    if cls is REINFORCE:
        np.testing.assert_allclose(updates["shaped"][0], updates["plain"][0], rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(shaped.rollout_buffer.rewards, plain.rollout_buffer.rewards, rtol=0, atol=1e-6)
        np.testing.assert_allclose(shaped.rollout_buffer.returns, plain.rollout_buffer.returns, rtol=0, atol=1e-5)


def test_reward_shaping_and_ref_kl_by_hand_discrete():
    """Constant policies p and q on CartPole: r'_t = r_t - beta (log p(a_t) - log q(a_t)), ref_kl = sum p log(p / q)."""
    beta = 0.3
    reference = make(PPOClip, seed=1)
    set_constant_policy(reference, [0.4, -0.6])
    models = []
    for kwargs in ({}, dict(ref_policy=reference, ref_kl_coef=beta)):
        model = make(PPOClip, **kwargs)  # built and trained in turn: SB3 seeds the global random state at construction
        models.append(model)
        set_constant_policy(model, [-0.2, 0.3])
        model.set_logger(silent_logger())
        model.learn(64)  # one rollout (the same actions: same seed, same policy), then one update
    plain, shaped = models
    p = th.log_softmax(th.tensor([-0.2, 0.3], dtype=th.float64), 0)
    q = th.log_softmax(th.tensor([0.4, -0.6], dtype=th.float64), 0)
    actions = plain.rollout_buffer.actions.astype(int).flatten()
    np.testing.assert_array_equal(actions, shaped.rollout_buffer.actions.astype(int).flatten())
    expected = -beta * (p - q).numpy()[actions]
    shaping = shaped.rollout_buffer.rewards.flatten() - plain.rollout_buffer.rewards.flatten()
    np.testing.assert_allclose(shaping, expected, atol=1e-6)
    logs = shaped.logger.name_to_value
    assert logs["train/ref_kl"] == pytest.approx(float((p.exp() * (p - q)).sum()), rel=1e-5)
    assert logs["train/ref_kl_reward"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert logs["train/ref_kl_coef"] == beta


def test_loss_term_by_hand_gaussian():
    """
    Constant Gaussians, policy N(mu, s) and reference N(mu_r, s_r):
    beta * KL = beta * (log(s_r / s) + (s^2 + (mu - mu_r)^2) / (2 s_r^2) - 1/2).
    """
    beta = 0.7
    reference = make(PPOClip, "Pendulum-v1", seed=1)
    set_constant_policy(reference, [0.5], log_std=[-0.3])
    model = make(PPOClip, "Pendulum-v1", ref_policy=reference, ref_kl_coef=beta, ref_kl_placement="loss")
    set_constant_policy(model, [-0.1], log_std=[0.2])
    model.set_logger(silent_logger())
    model.learn(64)
    logs = model.logger.name_to_value
    mu, s, mu_r, s_r = -0.1, math.exp(0.2), 0.5, math.exp(-0.3)
    kl = math.log(s_r / s) + (s**2 + (mu - mu_r) ** 2) / (2 * s_r**2) - 0.5
    assert logs["train/ref_kl"] == pytest.approx(kl, rel=1e-5)  # measured before the update
    # the loss term itself, on a minibatch of the update's states, with the policy as it was
    observations = th.as_tensor(model.rollout_buffer.observations[:8])
    model._ref_batch, _ = model._reference_batch(observations, th.zeros(8, 1), None, keep_snapshot=True)
    set_constant_policy(model, [-0.1], log_std=[0.2])
    penalty = model._reference_penalty(model.policy.get_distribution(observations))
    assert penalty.item() == pytest.approx(beta * kl, rel=1e-5)
    assert penalty.requires_grad  # it trains the policy
    assert "train/ref_kl_reward" not in logs


# ----- every algorithm, placement and space -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALGOS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("placement", ["reward", "loss"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_algorithm_trains_with_each_placement(cls, placement, env_id):
    reference = make(cls, env_id, seed=1)
    set_constant_policy(reference, [0.3] if env_id == "Pendulum-v1" else [0.5, -0.5])
    model = make(
        cls,
        env_id,
        ref_policy=reference,
        ref_kl_coef=0.5,
        ref_kl_controller="adaptive",
        ref_kl_target=0.01,
        ref_kl_placement=placement,
    )
    logs = learn_and_read_logs(model, 192)
    assert logs["train/ref_kl"] > 0 and math.isfinite(logs["train/ref_kl"])
    assert logs["train/ref_kl_target"] == 0.01
    assert ("train/ref_kl_reward" in logs) == (placement == "reward")
    # ref_kl above the target: the adaptive controller doubled beta after every update
    assert model.reference.kl_coef > 0.5
    assert th.isfinite(policy_params(model)).all()


@pytest.mark.parametrize("cls", [PPOKL, TRPOKL], ids=lambda c: c.__name__)
@pytest.mark.parametrize("placement", ["reward", "loss"])
def test_fast_path_runs_with_the_reference_term_and_equals_the_standard_code(cls, placement):
    params = []
    for fast in (True, False):
        model = make(cls, "Pendulum-v1", fast=fast, ref_policy="initial", ref_kl_coef=0.1, ref_kl_placement=placement)
        model.learn(192)
        params.append(policy_params(model))
        assert (model.fast_path_fallback("update") is None) == fast
    assert th.equal(*params)


# ----- init_from_ref, normalisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("what", [True, "actor", "actor_critic"])
def test_init_from_ref_copies_the_actor_and_optionally_the_critic(what):
    reference = make(PPOClip, seed=1)
    model = make(PPOClip, ref_policy=reference, init_from_ref=what)
    ours, theirs = model.policy.state_dict(), reference.policy.state_dict()
    for key in ours:
        if what == "actor_critic" or not key.startswith(("mlp_extractor.value_net", "value_net")):
            assert th.equal(ours[key], theirs[key]), key
        elif key.endswith("weight"):  # (SB3 starts every bias at 0)
            assert not th.equal(ours[key], theirs[key]), key


def test_init_from_ref_with_another_network_is_a_clear_error():
    reference = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[8]))
    with pytest.raises(ValueError, match="init_from_ref"):
        make(PPOClip, ref_policy=reference, init_from_ref="actor")


def test_reference_sees_its_own_observation_normalisation():
    venv = VecNormalize(DummyVecEnv([lambda: __import__("gymnasium").make("CartPole-v1")]), norm_reward=False)
    venv.obs_rms.mean[:] = [1.0, 2.0, 3.0, 4.0]
    venv.obs_rms.var[:] = 4.0
    model = make(PPOClip, ref_policy=PPO("MlpPolicy", "CartPole-v1"), ref_vec_normalize=venv)
    raw = np.array([[1.0, 0.0, 3.0, 8.0]], dtype=np.float32)
    seen = model.reference.observations(th.as_tensor(raw), None, model.device)
    np.testing.assert_allclose(seen.numpy(), [[0.0, -1.0, 0.0, 2.0]], atol=1e-4)
    assert model.reference.observations(th.as_tensor(raw), None, model.device) is not raw


# ----- save, load, resume -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, placement",
    [(PPOClip, "reward"), (PPOKL, "loss"), (TRPOKL, "reward"), (TRPOKL, "loss"), (REINFORCE, "reward"), (REINFORCE, "loss")],
    ids=str,
)
def test_save_load_continue_matches_uninterrupted(cls, placement, tmp_path):
    """
    learn(a); save; load; learn(b) == learn(a + b): same beta, same reference weights, same parameters (CPU). REINFORCE
    with one environment: its updates end with an episode, so no unfinished episode is lost by the save (unfinished
    episodes are not saved with a model).
    """
    reference = make(cls, seed=1)
    set_constant_policy(reference, [0.5, -0.5])
    reference.save(tmp_path / "reference.zip")
    kwargs = dict(
        ref_policy=str(tmp_path / "reference.zip"),
        ref_kl_coef=0.5,
        ref_kl_controller="proportional",
        ref_kl_target=0.01,
        ref_kl_horizon=1000,
        ref_kl_placement=placement,
    )
    uninterrupted = make(cls, **kwargs)
    uninterrupted.learn(128)
    np_state, th_state = np.random.get_state(), th.get_rng_state()
    uninterrupted.learn(128, reset_num_timesteps=False)

    first = make(cls, **kwargs)
    first.learn(128)
    coef = first.reference.kl_coef
    assert coef != 0.5  # it moved
    first.save(tmp_path / "half.zip")
    resumed = cls.load(tmp_path / "half.zip", env=first.get_env())
    assert isinstance(resumed.reference, ReferenceTerm) and resumed.reference.kl_coef == coef
    assert resumed.ref_policy == str(tmp_path / "reference.zip") and resumed.ref_kl_placement == placement
    for p, q in zip(resumed.reference.policy.parameters(), reference.policy.parameters(), strict=True):
        assert th.equal(p, q) and not p.requires_grad
    resumed._last_obs = first._last_obs  # the env carries on where it was
    resumed._last_episode_starts = first._last_episode_starts
    np.random.set_state(np_state)
    th.set_rng_state(th_state)
    resumed.learn(128, reset_num_timesteps=False)

    assert resumed.reference.controller.state() == uninterrupted.reference.controller.state()
    assert th.equal(policy_params(resumed), policy_params(uninterrupted))


def test_initial_reference_is_frozen_at_the_first_learn_and_saved(tmp_path):
    model = make(PPOClip, ref_policy="initial", ref_kl_coef=0.1)
    assert model.reference.policy is None
    start = policy_params(model)
    model.learn(128)
    frozen = th.cat([p.reshape(-1) for p in model.reference.policy.parameters()])
    assert th.equal(frozen, start) and not th.equal(policy_params(model), start)
    model.save(tmp_path / "m.zip")
    loaded = PPOClip.load(tmp_path / "m.zip", env=model.get_env())
    assert th.equal(th.cat([p.reshape(-1) for p in loaded.reference.policy.parameters()]), start)
    loaded.learn(64)  # the reference stays the saved one
    assert th.equal(th.cat([p.reshape(-1) for p in loaded.reference.policy.parameters()]), start)


def test_zip_without_reference_loads_with_the_term_off(tmp_path):
    PPO("MlpPolicy", "CartPole-v1", n_steps=64).save(tmp_path / "ppo.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PPOKL.load(tmp_path / "ppo.zip")
    assert model.reference is None


# ----- checks -------------------------------------------------------------------------------------------------------


def test_wrong_spaces_or_distribution_are_clear_errors_before_training(tmp_path):
    pendulum = PPO("MlpPolicy", "Pendulum-v1", n_steps=64)
    with pytest.raises(ValueError, match="ref_policy has the observation space"):
        make(PPOClip, ref_policy=pendulum, ref_kl_coef=0.1)
    mountain_car = PPO("MlpPolicy", "MountainCarContinuous-v0", n_steps=64)
    with pytest.raises(ValueError, match="ref_policy has the observation space"):
        make(REINFORCE, "Pendulum-v1", ref_policy=mountain_car)
    gsde = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, use_sde=True)
    gsde.save(tmp_path / "gsde.zip")
    with pytest.raises(ValueError, match="action distribution is StateDependentNoiseDistribution"):
        make(TRPOKL, "Pendulum-v1", ref_policy=tmp_path / "gsde.zip")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ref_kl_coef=0.1), "need a reference policy"),
        (dict(ref_policy="initial", ref_kl_placement="advantage"), "ref_kl_placement must be one of"),
        (dict(ref_policy="initial", ref_kl_estimator="k2"), "ref_kl_estimator must be one of"),
        (dict(ref_policy="initial", ref_kl_controller="pid"), "ref_kl_controller must be one of"),
        (dict(ref_policy="initial", ref_kl_controller="adaptive", ref_kl_coef=1.0), "needs ref_kl_target"),
        (dict(ref_policy="initial", ref_kl_coef=-1.0), "ref_kl_coef must be"),
        (dict(ref_policy="initial", ref_kl_horizon=100), "ref_kl_horizon"),
        (dict(ref_policy="initial", init_from_ref=True), "init_from_ref needs a reference other than"),
        (dict(ref_policy="initial", init_from_ref="critic"), "init_from_ref must be one of"),
        (dict(ref_policy=3), "ref_policy must be None"),
    ],
)
def test_bad_reference_arguments_name_the_argument(kwargs, message):
    for cls in ALGOS:
        with pytest.raises((ValueError, TypeError), match=message):
            make(cls, **kwargs)
