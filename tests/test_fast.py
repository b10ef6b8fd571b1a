"""The fast path (``fast=True``, the default) changes the speed, not the arithmetic.

- PPOClip equals SB3 PPO and TRPOKL equals sb3-contrib TRPO bit for bit (``torch.equal``) on every parameter, the
  optimizer state and ``p.grad``, for Discrete, Box, MultiDiscrete and MultiBinary actions, with and without
  VecNormalize, for two seeds; PPOKL and REINFORCE equal their own standard path (``fast=False``).
- The fast path is taken where it applies (``fast_path_fallback`` is None) and not where it does not (gSDE,
  CnnPolicy, MultiInputPolicy, custom policies, other optimizers): there the results equal the standard path's.
- SB3's semantics: a model saved with the fast path loads into SB3's PPO / contrib TRPO and back and keeps training
  identically, callbacks see the same values, the ``train/`` logs are the same.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import TRPO
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ppo_variants import PPOKL, REINFORCE, TRPOKL, PPOClip
from sb3_ppo_variants.common.buffers import ensure_flattened
from sb3_ppo_variants.common.fast import FlatAdam, PolicyKernel
from tests.helpers import learn_and_read_logs, policy_params


class _ToyEnv(gym.Env):
    """Three-dimensional Box observations, 20-step episodes (truncated), the action space given."""

    def __init__(self, action_space: gym.Space, observation_space: gym.Space | None = None):
        self.action_space = action_space
        self.observation_space = observation_space or gym.spaces.Box(-1, 1, (3,), np.float32)
        self._t = 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def _obs(self):
        return self.np_random.uniform(-1, 1, 3).astype(np.float32)

    def step(self, action):
        self._t += 1
        obs = self._obs()
        reward = float(np.sum(np.asarray(action, dtype=np.float64)) * obs[0])
        return obs, reward, False, self._t >= 20, {}


def _multi_binary() -> gym.Env:
    return _ToyEnv(gym.spaces.MultiBinary(4))


def _box3() -> gym.Env:
    # a Gaussian over several dimensions: the log-probability's sum over them
    return _ToyEnv(gym.spaces.Box(-1, 1, (3,), np.float32))


def _multi_discrete() -> gym.Env:
    return _ToyEnv(gym.spaces.MultiDiscrete([3, 4]))


class _DictEnv(_ToyEnv):
    def __init__(self):
        super().__init__(gym.spaces.Discrete(2), gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,), np.float32)}))

    def _obs(self):
        return {"a": self.np_random.uniform(-1, 1, 3).astype(np.float32)}

    def step(self, action):
        self._t += 1
        obs = self._obs()
        return obs, float(action) * float(obs["a"][0]), False, self._t >= 20, {}


class _ImageEnv(_ToyEnv):
    def __init__(self):
        super().__init__(gym.spaces.Discrete(2), gym.spaces.Box(0, 255, (36, 36, 1), np.uint8))

    def _obs(self):
        return self.np_random.integers(0, 256, (36, 36, 1), dtype=np.uint8)

    def step(self, action):
        self._t += 1
        obs = self._obs()
        return obs, float(action) * float(obs[0, 0, 0]) / 255, False, self._t >= 20, {}


ENVS = {
    "Discrete": "CartPole-v1",
    "Box": "Pendulum-v1",
    "Box3": _box3,
    "MultiDiscrete": _multi_discrete,
    "MultiBinary": _multi_binary,
}
PPO_SETTINGS = dict(n_steps=32, batch_size=16, n_epochs=2, policy_kwargs=dict(net_arch=[16]))
TRPO_SETTINGS = dict(n_steps=32, batch_size=16, n_critic_updates=2, cg_max_steps=4, policy_kwargs=dict(net_arch=[16]))
N_ENVS = 2
UPDATES = 3


def _env(space: str, normalize: bool, seed: int, env=None):
    vec_env = make_vec_env(env or ENVS[space], n_envs=N_ENVS, seed=seed)
    return VecNormalize(vec_env) if normalize else vec_env


def _train(cls, space: str, normalize: bool, seed: int, env=None, **kwargs):
    """Three updates: two in one ``learn``, the third in another (``reset_num_timesteps=False``)."""
    settings = TRPO_SETTINGS if issubclass(cls, TRPO) else PPO_SETTINGS
    model = cls("MlpPolicy", _env(space, normalize, seed, env), seed=seed, **{**settings, **kwargs})
    steps = settings["n_steps"] * N_ENVS
    model.learn(2 * steps)
    model.learn(steps, reset_num_timesteps=False)
    return model


def _optimizer_state(model) -> list[th.Tensor]:
    state = model.policy.optimizer.state_dict()["state"]
    return [state[index][key] for index in sorted(state) for key in ("step", "exp_avg", "exp_avg_sq")]


def _grads(model) -> list[th.Tensor | None]:
    return [p.grad for p in model.policy.parameters()]


def assert_same_model(first, second) -> None:
    """Parameters, the optimizer's state and ``p.grad``, bit for bit; the rollout buffer too."""
    assert th.equal(policy_params(first), policy_params(second))
    first_state, second_state = _optimizer_state(first), _optimizer_state(second)
    assert len(first_state) == len(second_state)
    assert all(th.equal(a, b) for a, b in zip(first_state, second_state, strict=True))
    for a, b in zip(_grads(first), _grads(second), strict=True):
        assert (a is None and b is None) or (a is not None and b is not None and th.equal(a, b))
    assert first._n_updates == second._n_updates
    assert first.num_timesteps == second.num_timesteps
    observations = first.rollout_buffer.observations, second.rollout_buffer.observations
    if isinstance(observations[0], dict):
        for key in observations[0]:
            np.testing.assert_array_equal(observations[0][key], observations[1][key])
    else:
        np.testing.assert_array_equal(*observations)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "VecNormalize"])
@pytest.mark.parametrize("space", list(ENVS))
@pytest.mark.parametrize("ours, peer", [(PPOClip, PPO), (TRPOKL, TRPO)], ids=["PPOClip-PPO", "TRPOKL-TRPO"])
def test_fast_path_is_bit_identical_to_the_peer(ours, peer, space, normalize, seed):
    model = _train(ours, space, normalize, seed)
    assert len(_optimizer_state(model)) > 0
    assert model.fast_path_fallback("rollout") is None
    assert model.fast_path_fallback("update") is None
    assert isinstance(model._flat_adam, FlatAdam)  # the fast update ran
    assert_same_model(model, _train(peer, space, normalize, seed))


@pytest.mark.parametrize("space", list(ENVS))
def test_ppo_kl_fast_path_equals_its_standard_path(space):
    model = _train(PPOKL, space, True, 0)
    assert model.fast_path_fallback("update") is None
    assert_same_model(model, _train(PPOKL, space, True, 0, fast=False))


@pytest.mark.parametrize("baseline", ["none", "value"])
@pytest.mark.parametrize("space", list(ENVS))
def test_reinforce_fast_collection_equals_its_standard_path(space, baseline):
    def train(fast: bool):
        model = REINFORCE("MlpPolicy", _env(space, True, 0), n_steps=60, baseline=baseline, seed=0, fast=fast)
        return model.learn(800)

    fast, standard = train(True), train(False)
    assert fast.fast_path_fallback() is None and standard.fast_path_fallback() == "fast=False"
    assert fast._n_updates == standard._n_updates > 1
    assert th.equal(policy_params(fast), policy_params(standard))
    if baseline == "value":  # the value regression ran on the fast path, with the same Adam state
        assert fast._flat_adams is not None and id(fast.value_optimizer) in fast._flat_adams
        states = [model.value_optimizer.state_dict()["state"] for model in (fast, standard)]
        assert states[0].keys() == states[1].keys() and len(states[0]) > 0
        for index, state in states[0].items():
            assert all(th.equal(state[key], states[1][index][key]) for key in ("step", "exp_avg", "exp_avg_sq"))


@pytest.mark.parametrize(
    "settings",
    [dict(clip_range_vf=0.1), dict(target_kl=0.001), dict(normalize_advantage=False, max_grad_norm=0.05), dict(ent_coef=0.01)],
    ids=["clip_range_vf", "target_kl", "no-normalisation-tight-clipping", "entropy-bonus"],
)
def test_ppo_options_on_the_fast_path_stay_identical(settings):
    model = _train(PPOClip, "Box", True, 0, **settings)
    assert model.fast_path_fallback("update") is None
    assert_same_model(model, _train(PPO, "Box", True, 0, **settings))


class _OverridingPolicy(ActorCriticPolicy):
    """A custom policy: the kernel cannot know what its evaluate_actions computes."""

    def evaluate_actions(self, obs, actions):
        return super().evaluate_actions(obs, actions)


FALLBACKS = {
    # case: (env, constructor arguments, the part(s) that fall back, a word of the reason)
    "gSDE": ("Box", dict(use_sde=True), ("rollout", "update"), "gSDE"),
    "custom-policy": ("Discrete", dict(policy=_OverridingPolicy), ("rollout", "update"), "overrides evaluate_actions"),
    "MultiInputPolicy": (_DictEnv, dict(policy="MultiInputPolicy"), ("rollout", "update"), "observation space"),
    "CnnPolicy": (_ImageEnv, dict(policy="CnnPolicy", policy_kwargs=dict(net_arch=[16])), ("rollout", "update"), "image"),
    "SGD": ("Discrete", dict(policy_kwargs=dict(net_arch=[16], optimizer_class=th.optim.SGD)), ("update",), "SGD"),
    "weight-decay": (
        "Box",
        dict(policy_kwargs=dict(net_arch=[16], optimizer_kwargs=dict(eps=1e-5, weight_decay=1e-3))),
        ("update",),
        "weight_decay",
    ),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_fallbacks_take_the_standard_path_with_the_same_results(case):
    env, kwargs, parts, reason = FALLBACKS[case]
    policy = kwargs.get("policy", "MlpPolicy")
    kwargs = {key: value for key, value in kwargs.items() if key != "policy"}
    space, env_fn = (env, None) if isinstance(env, str) else ("Discrete", env)

    def train(cls, **extra):
        settings = {**PPO_SETTINGS, **kwargs, **extra}
        model = cls(policy, _env(space, False, 0, env_fn), seed=0, **settings)
        return model.learn(2 * PPO_SETTINGS["n_steps"] * N_ENVS)

    model = train(PPOClip)
    for part in ("rollout", "update"):
        fallback = model.fast_path_fallback(part)
        if part in parts:
            assert fallback is not None and reason in fallback, (part, fallback)
        else:
            assert fallback is None, (part, fallback)
    if "update" in parts:
        assert model._flat_adam is None
    assert_same_model(model, train(PPOClip, fast=False))
    assert_same_model(model, train(PPO))


@pytest.mark.parametrize("ours, peer", [(PPOClip, PPO), (TRPOKL, TRPO)], ids=["PPOClip-PPO", "TRPOKL-TRPO"])
def test_saved_fast_models_load_into_the_peer_and_back_and_train_on_identically(ours, peer, tmp_path):
    """Train ours, save; load it into the peer and into ours (the flat buffers are rebuilt from the loaded optimizer
    state) and train both one more update from the same random state: identical. Then the peer's zip into ours."""
    model = _train(ours, "Box", False, 0)
    model.save(tmp_path / "ours.zip")
    continued = []
    for cls in (peer, ours):
        loaded = cls.load(tmp_path / "ours.zip", env=_env("Box", False, 5))
        loaded.set_random_seed(7)
        continued.append(loaded.learn(PPO_SETTINGS["n_steps"] * N_ENVS, reset_num_timesteps=False))
    assert type(continued[0]) is peer and type(continued[1]) is ours
    assert_same_model(*continued)

    continued[0].save(tmp_path / "peer.zip")
    back = ours.load(tmp_path / "peer.zip", env=_env("Box", False, 6))
    again = peer.load(tmp_path / "peer.zip", env=_env("Box", False, 6))
    for loaded in (back, again):
        loaded.set_random_seed(8)
        loaded.learn(PPO_SETTINGS["n_steps"] * N_ENVS, reset_num_timesteps=False)
    assert back.fast_path_fallback("update") is None
    assert_same_model(back, again)


class _Recorder(BaseCallback):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple] = []

    def _on_step(self) -> bool:
        local = self.locals
        self.seen.append(
            (
                self.num_timesteps,
                np.array(local["actions"]).tolist(),
                np.array(local["clipped_actions"]).tolist(),
                np.asarray(local["rewards"]).tolist(),
                np.asarray(local["new_obs"]).tolist(),
                th.as_tensor(local["values"]).tolist(),
                th.as_tensor(local["log_probs"]).tolist(),
            )
        )
        return True


def test_callbacks_see_what_they_see_in_sb3():
    recorded = []
    for cls in (PPO, PPOClip):
        recorder = _Recorder()
        model = cls("MlpPolicy", _env("Box", True, 0), seed=0, **PPO_SETTINGS)
        model.learn(2 * PPO_SETTINGS["n_steps"] * N_ENVS, callback=recorder)
        recorded.append(recorder.seen)
    assert len(recorded[0]) == 2 * PPO_SETTINGS["n_steps"]
    assert recorded[0] == recorded[1]


@pytest.mark.parametrize("cls", [PPOClip, PPOKL, TRPOKL])
@pytest.mark.parametrize("level", ["off", "basic", "full"])
def test_logs_are_the_same_on_both_paths(cls, level):
    settings = TRPO_SETTINGS if cls is TRPOKL else PPO_SETTINGS
    logs = []
    for fast in (True, False):
        model = cls("MlpPolicy", _env("Box", True, 0), seed=0, diagnostics=level, fast=fast, **settings)
        logs.append(learn_and_read_logs(model, 2 * settings["n_steps"] * N_ENVS))
    assert logs[0].keys() == logs[1].keys()
    for key, value in logs[0].items():  # exact, NaN equal to NaN (histograms are tensors)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(logs[1][key]), err_msg=key)


def test_fast_argument_is_validated():
    with pytest.raises(TypeError, match="fast"):
        PPOClip("MlpPolicy", "CartPole-v1", fast="yes")


def test_a_replaced_optimizer_state_rebuilds_the_flat_buffers():
    """``optimizer.load_state_dict`` replaces the state tensors: the next update uses the loaded values."""
    model = _train(PPOClip, "Discrete", False, 0)
    reference = _train(PPOClip, "Discrete", False, 0, fast=False)
    state = reference.policy.optimizer.state_dict()
    model.policy.optimizer.load_state_dict(state)
    reference.policy.optimizer.load_state_dict(state)
    for loaded in (model, reference):
        loaded.set_random_seed(3)
        loaded.learn(PPO_SETTINGS["n_steps"] * N_ENVS, reset_num_timesteps=False)
    assert_same_model(model, reference)


def test_kernel_reproduces_the_policy_calls():
    """The kernel's forward passes against the policy's own methods, with the same random state."""
    for env_id in ("CartPole-v1", "Pendulum-v1"):
        model = PPOClip("MlpPolicy", env_id, seed=0)
        kernel = PolicyKernel.of(model.policy)
        assert kernel is not None
        obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(8)]))
        with th.no_grad():
            th.manual_seed(0)
            expected = model.policy(obs)
            th.manual_seed(0)
            got = kernel.forward(obs)
            assert all(th.equal(a, b) for a, b in zip(expected, got, strict=True))
            th.manual_seed(1)
            expected_actions = model.policy.get_distribution(obs).get_actions()
            th.manual_seed(1)
            assert th.equal(expected_actions, kernel.get_actions(obs))
            assert th.equal(model.policy.predict_values(obs), kernel.value(kernel.features(obs)))
            actions = expected[0].float() if env_id == "Pendulum-v1" else expected[0]
            # the old policy of the diagnostics and of PPOKL's penalty: parameters, log-probabilities, entropy
            distribution = copy.copy(model.policy.get_distribution(obs))
            from_kernel = kernel.get_distribution(obs)
            assert from_kernel is model.policy.action_dist  # as SB3 leaves it
            for name in ("mean", "stddev", "logits"):
                if hasattr(distribution.distribution, name) and (env_id == "Pendulum-v1") == (name != "logits"):
                    assert th.equal(getattr(distribution.distribution, name), getattr(from_kernel.distribution, name))
            assert th.equal(distribution.log_prob(actions), from_kernel.log_prob(actions))
            assert th.equal(distribution.entropy(), from_kernel.entropy())
        assert kernel.mode_independent
        for a, b in zip(model.policy.evaluate_actions(obs, actions), kernel.evaluate_actions(obs, actions), strict=True):
            assert th.equal(a, b)


def test_an_optimizer_step_taken_outside_train_is_seen_by_the_next_update():
    """A user's own ``optimizer.step()`` (per-parameter Adam on the views) between updates: the flat buffers follow."""
    models = [_train(PPOClip, "Discrete", False, 0, fast=fast) for fast in (True, False)]
    for model in models:
        for p in model.policy.parameters():
            p.grad = th.full_like(p, 0.1)
        model.policy.optimizer.step()
        model.set_random_seed(3)
        model.learn(PPO_SETTINGS["n_steps"] * N_ENVS, reset_num_timesteps=False)
    assert_same_model(*models)


def test_the_kept_kernel_follows_changes_to_the_policy_between_updates():
    """
    The kernel is kept between rollouts and updates while the policy is unchanged; a forward hook, a replaced module or
    a replaced parameter between two ``learn`` calls is seen by the next one: the hook makes the standard code run, a
    replaced layer is the one the next update trains (the same results as the standard path with the same change).
    """
    models = [_train(PPOClip, "Box", False, 0, fast=fast) for fast in (True, False)]
    model = models[0]
    kernel = model._kernel()
    assert kernel is not None and model._kernel() is kernel  # kept
    handle = model.policy.action_net.register_forward_hook(lambda module, args, output: None)
    assert model._kernel() is None and "hooks" in model.fast_path_fallback()
    handle.remove()
    assert model._kernel() is not None
    for each in models:
        th.manual_seed(5)
        each.policy.action_net = th.nn.Linear(16, 1)  # a new module (its own weights), outside the optimizer
        each.policy.log_std = th.nn.Parameter(th.full((1,), -0.5))  # a new parameter
        each.policy.optimizer = each.policy.optimizer_class(each.policy.parameters(), lr=3e-4)
        each.set_random_seed(3)
        each.learn(PPO_SETTINGS["n_steps"] * N_ENVS, reset_num_timesteps=False)
    assert model._kernel() is not kernel
    assert model._kernel()._action_net[0] is model.policy.action_net.weight
    assert_same_model(*models)


@pytest.mark.parametrize("buffer_class", [RolloutBuffer, DictRolloutBuffer])
def test_ensure_flattened_flattens_as_sb3s_get_does(buffer_class):
    """SB3's two buffer classes are flattened with their ``get``'s statements: every array as ``get`` leaves it (an SB3
    release that flattens another array would fail here), and NumPy's global random state untouched."""
    dict_space = spaces.Dict({"a": spaces.Box(-1, 1, (3,)), "b": spaces.Box(-1, 1, (2, 2))})
    observation_space = dict_space if buffer_class is DictRolloutBuffer else spaces.Box(-1, 1, (3,))
    buffers = [buffer_class(4, observation_space, spaces.Box(-1, 1, (2,)), n_envs=2) for _ in range(2)]
    rng = np.random.default_rng(0)
    for buffer in buffers:
        buffer.reset()
    for _ in range(4):
        sample = observation_space.sample()
        obs = {k: np.stack([v, v]) for k, v in sample.items()} if isinstance(sample, dict) else np.stack([sample, sample])
        step = (obs, rng.normal(size=(2, 2)), rng.normal(size=2), np.zeros(2), th.randn(2, 1), th.randn(2))
        for buffer in buffers:
            buffer.add(*step)
    state = np.random.get_state()
    ensure_flattened(buffers[0])
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]
    next(buffers[1].get(8))
    first, second = vars(buffers[0]), vars(buffers[1])
    assert buffers[0].generator_ready and set(first) == set(second)
    for name, value in first.items():
        if isinstance(value, dict):
            assert all(np.array_equal(value[key], second[name][key]) for key in value), name
        elif isinstance(value, np.ndarray):
            assert value.shape == second[name].shape and np.array_equal(value, second[name]), name
