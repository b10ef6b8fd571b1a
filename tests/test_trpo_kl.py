"""TRPOKL: the same parameters as sb3-contrib's TRPO, a drop-in constructor, and truthful trust-region diagnostics."""

import inspect
import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import TRPO
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
)
from stable_baselines3.common.logger import configure

import sb3_ppo_variants.trpo_kl.trpo_kl as trpo_kl_module
from sb3_ppo_variants.common.distributions import DistributionSnapshot
from sb3_ppo_variants.trpo_kl import TRPOKL
from sb3_ppo_variants.trpo_kl.trpo_kl import LineSearchResult, cg_relative_residual
from tests.helpers import assert_signature_superset

FAST = dict(n_steps=64, batch_size=32, cg_max_steps=5, policy_kwargs=dict(net_arch=[16]))

SB3_CONTRIB_KEYS = {
    "train/policy_objective",
    "train/value_loss",
    "train/kl_divergence_loss",
    "train/explained_variance",
    "train/is_line_search_success",
    "train/n_updates",
}
BASIC_KEYS = {
    "train/line_search_steps",
    "train/step_fraction",
    "train/expected_improvement",
    "train/actual_improvement",
    "train/improvement_ratio",
    "train/cg_residual",
    "train/policy_kl",
    "train/trust_region_kl",
    "train/approx_kl",
    "train/ratio_mean",
    "train/ratio_std",
    "train/ratio_min",
    "train/ratio_max",
    "train/ess",
    "train/grad_norm",
}


class DictIdentityEnv(gym.Env):
    """Small Dict-observation env (SB3's SimpleMultiObsEnv has a 64x64 image, too slow for a unit test)."""

    def __init__(self, ep_length: int = 20):
        self.observation_space = gym.spaces.Dict(
            {"vec": gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32), "target": gym.spaces.Discrete(3)}
        )
        self.action_space = gym.spaces.Discrete(3)
        self.ep_length = ep_length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.current_step = 0
        self.state = self.observation_space.sample()
        return self.state, {}

    def step(self, action):
        reward = float(action == self.state["target"])
        self.current_step += 1
        self.state = self.observation_space.sample()
        return self.state, reward, False, self.current_step >= self.ep_length, {}


def policy_parameters(model) -> np.ndarray:
    return th.cat([param.detach().reshape(-1) for param in model.policy.parameters()]).cpu().numpy()


def actor_parameters(model) -> dict[str, th.Tensor]:
    # the parameters sb3-contrib treats as the actor's (its rule: names without "value")
    return {name: param.detach().clone() for name, param in model.policy.named_parameters() if "value" not in name}


def train_once(model) -> dict[str, float]:
    """One rollout and one ``train()``; the values logged by that update."""
    model.set_logger(configure(None, []))
    model.learn(model.n_steps * model.n_envs)
    return dict(model.logger.name_to_value)


# ----- (a) same parameters as sb3-contrib ---------------------------------------------------------


@pytest.mark.parametrize("diagnostics", ["off", "basic", "full"])
@pytest.mark.parametrize(
    "env_id, extra",
    [("CartPole-v1", {}), ("Pendulum-v1", {}), ("Pendulum-v1", dict(use_sde=True, sde_sample_freq=4))],
)
def test_same_parameters_as_sb3_contrib(env_id, extra, diagnostics):
    reference = TRPO("MlpPolicy", env_id, seed=0, **FAST, **extra).learn(3 * 64)
    model = TRPOKL("MlpPolicy", env_id, seed=0, diagnostics=diagnostics, **FAST, **extra).learn(3 * 64)
    assert model._n_updates == reference._n_updates == 3
    np.testing.assert_array_equal(policy_parameters(model), policy_parameters(reference))  # bit-identical


# ----- (b) drop-in constructor --------------------------------------------------------------------


def test_signature_is_superset_of_sb3_contrib_trpo():
    assert_signature_superset(TRPOKL, TRPO)
    assert inspect.signature(TRPOKL).parameters["diagnostics"].default == "basic"
    assert TRPOKL.policy_aliases.keys() == TRPO.policy_aliases.keys()
    assert inspect.signature(TRPOKL.learn).parameters["tb_log_name"].default == "TRPOKL"


# ----- (c) line-search failure and numerical guard ------------------------------------------------


def test_failed_line_search_restores_the_actor(monkeypatch):
    solver = trpo_kl_module.conjugate_gradient_solver

    def uphill_solver(*args, **kwargs):
        # the opposite of the natural gradient: every tried step decreases the surrogate
        return -solver(*args, **kwargs)

    monkeypatch.setattr(trpo_kl_module, "conjugate_gradient_solver", uphill_solver)
    model = TRPOKL("MlpPolicy", "CartPole-v1", seed=0, **FAST)
    before = actor_parameters(model)
    logged = train_once(model)
    after = actor_parameters(model)
    for name, param in before.items():
        assert th.equal(param, after[name]), name

    assert logged["train/is_line_search_success"] == 0
    assert logged["train/step_fraction"] == 0
    assert logged["train/line_search_steps"] == model.line_search_max_iter
    assert logged["train/expected_improvement"] < 0
    assert logged["train/actual_improvement"] < 0
    # measured after the restore: exactly zero, not hard-coded
    assert logged["train/policy_kl"] == 0
    assert logged["train/trust_region_kl"] == 0
    assert logged["train/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    # the KL of the last tried step, not a fake 0.0
    assert logged["train/kl_divergence_loss"] > 0
    assert logged["train/nonfinite_steps"] == 0


def test_nonfinite_direction_skips_the_policy_step(monkeypatch):
    monkeypatch.setattr(trpo_kl_module, "conjugate_gradient_solver", lambda _fn, b, **_kw: th.full_like(b, float("nan")))
    model = TRPOKL("MlpPolicy", "Pendulum-v1", seed=0, **FAST)
    before = actor_parameters(model)
    with pytest.warns(UserWarning, match="non-finite"):
        logged = train_once(model)
    after = actor_parameters(model)
    for name, param in before.items():
        assert th.equal(param, after[name]), name
    assert all(th.isfinite(param).all() for param in model.policy.parameters())
    assert logged["train/nonfinite_steps"] == 1
    assert logged["train/is_line_search_success"] == 0
    assert logged["train/policy_kl"] == 0
    assert math.isnan(logged["train/kl_divergence_loss"])  # no step was tried


# ----- (d) hand-computed diagnostics --------------------------------------------------------------


def test_cg_relative_residual_hand_computed():
    hessian = th.tensor([[2.0, 0.0], [0.0, 1.0]])
    gradient = th.tensor([1.0, 1.0])
    x = th.tensor([0.5, 0.9])
    # H x = (1, 0.9), H x - g = (0, -0.1): residual 0.1 / sqrt(2)
    assert cg_relative_residual(hessian @ x, gradient) == pytest.approx(0.1 / math.sqrt(2), rel=1e-6)
    assert cg_relative_residual(hessian @ th.tensor([0.5, 1.0]), gradient) == 0.0
    assert math.isnan(cg_relative_residual(x, th.zeros(2)))


def test_kl_of_joint_action_distribution_hand_computed():
    """policy_kl (the shared KL of the measurement layer) sums over independent action dimensions."""

    def joint_kl(old, new):
        return DistributionSnapshot.from_distribution(old).kl_to(new)

    # N(0, 1) x N(0, 1) vs N(1, 1) x N(0, e^2): KL = 1/2 (first dim) + 1 + e^-2 / 2 - 1/2 (second dim)
    old = DiagGaussianDistribution(2).proba_distribution(th.zeros(3, 2), th.zeros(2))
    new = DiagGaussianDistribution(2).proba_distribution(th.tensor([[1.0, 0.0]] * 3), th.tensor([0.0, 1.0]))
    expected = 0.5 + (1 + math.exp(-2) / 2 - 0.5)
    np.testing.assert_allclose(joint_kl(old, new).numpy(), [expected] * 3, rtol=1e-6)
    # categorical: sum_a p log(p/q) with p = (1/2, 1/2), q = (1/4, 3/4)
    p = CategoricalDistribution(2).proba_distribution(th.log(th.tensor([[0.5, 0.5]])))
    q = CategoricalDistribution(2).proba_distribution(th.log(th.tensor([[0.25, 0.75]])))
    assert float(joint_kl(p, q)[0]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)
    assert float(joint_kl(p, p)[0]) == 0.0


def test_line_search_result_counts_steps():
    accepted = LineSearchResult(is_success=True, n_tries=3, coefficient=0.64, policy_objective=1.0)
    assert accepted.line_search_steps == 2 and accepted.step_fraction == 0.64
    failed = LineSearchResult(is_success=False, n_tries=10, coefficient=0.8**9, policy_objective=1.0)
    assert failed.line_search_steps == 10 and failed.step_fraction == 0.0


@pytest.mark.parametrize("diagnostics", ["off", "basic", "full"])
def test_logged_keys(diagnostics):
    logged = train_once(TRPOKL("MlpPolicy", "Pendulum-v1", seed=0, diagnostics=diagnostics, **FAST))
    keys = {key for key in logged if key.startswith("train/")}
    expected = SB3_CONTRIB_KEYS | {"train/std", "train/nonfinite_steps", "train/learning_rate"}
    if diagnostics != "off":
        expected |= BASIC_KEYS
    if diagnostics == "full":
        expected |= {"train/grad_snr", "train/policy_kl_max", "train/policy_kl_hist"}
    assert keys == expected


def test_diagnostics_are_consistent():
    logged = train_once(TRPOKL("MlpPolicy", "CartPole-v1", seed=0, diagnostics="full", **FAST))
    assert logged["train/is_line_search_success"] == 1
    shrink = 0.8  # sb3-contrib's default line_search_shrinking_factor
    assert logged["train/step_fraction"] == pytest.approx(shrink ** logged["train/line_search_steps"])
    # the constraint's KL at the accepted step, measured again after the update
    assert logged["train/trust_region_kl"] == pytest.approx(logged["train/kl_divergence_loss"], rel=1e-5)
    assert 0 < logged["train/trust_region_kl"] < 0.01
    assert logged["train/policy_kl"] > 0
    assert logged["train/improvement_ratio"] == pytest.approx(
        logged["train/actual_improvement"] / logged["train/expected_improvement"]
    )
    assert 0 <= logged["train/cg_residual"] < 1
    assert logged["train/grad_norm"] > 0
    assert 0 < logged["train/ess"] <= 1
    assert logged["train/grad_snr"] > 0


# ----- (e) action and observation spaces -----------------------------------------------------------


@pytest.mark.parametrize(
    "policy, env",
    [
        ("MlpPolicy", IdentityEnv(4)),
        ("MlpPolicy", IdentityEnvBox(eps=0.5)),
        ("MlpPolicy", IdentityEnvMultiDiscrete(2)),
        ("MlpPolicy", IdentityEnvMultiBinary(2)),
        ("MultiInputPolicy", DictIdentityEnv()),
    ],
    ids=["discrete", "box", "multidiscrete", "multibinary", "dict"],
)
def test_spaces(policy, env):
    model = TRPOKL(policy, env, seed=0, diagnostics="full", **FAST)
    model.set_logger(configure(None, []))
    model.learn(256)
    logged = model.logger.name_to_value
    for key in ["train/policy_kl", "train/trust_region_kl", "train/approx_kl", "train/cg_residual", "train/ess"]:
        assert math.isfinite(logged[key]), key
    assert logged["train/policy_kl"] >= 0


def test_sub_sampling_with_dict_observations():
    # sb3-contrib's TRPO slices the observations with [::k], which fails for Dict observations
    model = TRPOKL("MultiInputPolicy", DictIdentityEnv(), sub_sampling_factor=2, seed=0, **FAST)
    logged = train_once(model)
    assert model._n_updates == 1
    assert math.isfinite(logged["train/policy_kl"])


# ----- (f) save / load ----------------------------------------------------------------------------


def test_save_load(tmp_path):
    model = TRPOKL("MlpPolicy", "Pendulum-v1", seed=0, diagnostics="full", **FAST).learn(128)
    observations = np.stack([model.env.observation_space.sample() for _ in range(8)])
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "trpo_kl")
    loaded = TRPOKL.load(tmp_path / "trpo_kl")
    assert loaded.diagnostics == "full"
    loaded_actions, _ = loaded.predict(observations, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    np.testing.assert_array_equal(policy_parameters(model), policy_parameters(loaded))


# ----- (g) argument validation --------------------------------------------------------------------


def test_bad_diagnostics_value():
    with pytest.raises(ValueError, match=r"diagnostics must be one of \('off', 'basic', 'full'\), got 'verbose'"):
        TRPOKL("MlpPolicy", "CartPole-v1", diagnostics="verbose")


def test_nonfinite_critic_gradient_with_finite_loss_is_skipped():
    """The critic guard reads the gradient norm, not the loss: a NaN gradient with a finite loss never reaches the weights."""
    model = TRPOKL("MlpPolicy", "Pendulum-v1", seed=0, **FAST)
    value_weight = model.policy.value_net.weight
    value_weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.warns(UserWarning, match="non-finite"):
        logged = train_once(model)
    assert math.isfinite(logged["train/value_loss"])
    assert all(th.isfinite(param).all() for param in model.policy.parameters())
    assert logged["train/nonfinite_steps"] == model.n_critic_updates * 2  # every critic minibatch skipped
