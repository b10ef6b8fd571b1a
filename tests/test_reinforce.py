"""REINFORCE: Monte-Carlo targets, the baselines (optimal one against brute force), complete-episode batches
with carry-over, argument checks, save/load with the baseline state, every action space, drop-in features."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_ppo_variants.reinforce import REINFORCE
from sb3_ppo_variants.reinforce.baselines import (
    BASELINES,
    OptimalBaseline,
    actor_parameters,
    covariance_trace,
    discounted_returns,
    leave_one_out_mean,
    optimal_baseline,
    per_episode_gradients,
    value_parameters,
)
from sb3_ppo_variants.reinforce.episodes import Episode, EpisodeBatch, EpisodeBuffer
from tests.helpers import learn_and_read_logs, policy_params, silent_logger

FAST = dict(n_steps=64, policy_kwargs=dict(net_arch=[16]), seed=0)


class CountingEnv(gym.Env):
    """Observation = step index within the episode; episodes last exactly ``length`` steps; reward 1 per step."""

    def __init__(self, length: int):
        self.length = length
        self.observation_space = spaces.Box(0.0, 1000.0, (1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], dtype=np.float32), 1.0, self.t >= self.length, False, {}


# ----- returns ----------------------------------------------------------------------------------------


def test_discounted_returns_hand_made_episode():
    rewards = np.array([1.0, 2.0, 3.0])
    # G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75
    np.testing.assert_allclose(discounted_returns(rewards, 0.5), [2.75, 3.5, 3.0])
    np.testing.assert_allclose(discounted_returns(rewards, 0.5, reward_to_go=False), [2.75, 2.75, 2.75])
    # truncated after the last step, bootstrapped with V(s_T) = 4: G_t += 0.5^(T-t) * 4
    np.testing.assert_allclose(discounted_returns(rewards, 0.5, bootstrap_value=4.0), [3.25, 4.5, 5.0])
    np.testing.assert_allclose(discounted_returns(rewards, 0.5, False, 4.0), [3.25, 3.25, 3.25])
    np.testing.assert_allclose(discounted_returns(rewards, 1.0), [6.0, 5.0, 3.0])


@pytest.mark.parametrize("reward_to_go", [True, False])
def test_truncation_bootstrapped_only_with_the_value_baseline(reward_to_go):
    rewards = np.array([1.0, 2.0, 3.0])
    obs = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    terminal = np.array([3.0], dtype=np.float32)
    truncated = Episode(obs, np.zeros(3, dtype=np.int64), rewards, truncated=True, terminal_observation=terminal)
    terminated = Episode(obs, np.zeros(3, dtype=np.int64), rewards, truncated=False)
    for baseline in BASELINES:
        model = REINFORCE("MlpPolicy", CountingEnv(3), gamma=0.5, reward_to_go=reward_to_go, baseline=baseline, **FAST)
        batch = EpisodeBatch.from_episodes([truncated, terminated], model.device, discrete_actions=True)
        targets, _ = model.compute_returns(batch)
        bootstrap = 0.0
        if baseline == "value":
            with th.no_grad():
                bootstrap = model.policy.predict_values(th.as_tensor(terminal[None])).item()
            assert bootstrap != 0.0
        np.testing.assert_allclose(targets[:3], discounted_returns(rewards, 0.5, reward_to_go, bootstrap), rtol=1e-6)
        # a terminated episode is never bootstrapped
        np.testing.assert_allclose(targets[3:], discounted_returns(rewards, 0.5, reward_to_go), rtol=1e-6)


def test_episode_buffer_reads_time_limit_truncation():
    buffer = EpisodeBuffer(n_envs=2)
    obs = np.zeros((2, 1), dtype=np.float32)
    infos = [{"TimeLimit.truncated": True, "terminal_observation": np.ones(1)}, {"TimeLimit.truncated": False}]
    buffer.add(obs, np.zeros(2), np.ones(2), np.array([True, True]), infos)
    truncated, terminated = buffer.pop_finished()
    assert truncated.truncated and truncated.terminal_observation is not None
    assert not terminated.truncated and terminated.terminal_observation is None


def test_leave_one_out_mean():
    # episodes of targets [1, 2] and [3] and [5, 5, 5]: 6 steps, sum 21
    targets = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    starts = np.array([0, 2, 3, 6])
    expected = [18 / 4] * 2 + [18 / 5] + [6 / 3] * 3
    np.testing.assert_allclose(leave_one_out_mean(targets, starts), expected)
    np.testing.assert_allclose(leave_one_out_mean(np.array([1.0, 2.0]), np.array([0, 2])), [0.0, 0.0])


# ----- per-episode gradients and the optimal baseline --------------------------------------------------


def _tiny_policy_and_batch(gamma: float = 0.9):
    th.manual_seed(0)
    policy = ActorCriticPolicy(spaces.Box(-1, 1, (2,)), spaces.Discrete(3), lambda _: 1e-3, net_arch=[4])
    rng = np.random.default_rng(0)
    episodes = [
        Episode(
            observations=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
            actions=rng.integers(0, 3, length),
            rewards=rng.normal(1.0, 1.0, length),
        )
        for length in (2, 3, 1, 4)
    ]
    batch = EpisodeBatch.from_episodes(episodes, "cpu", discrete_actions=True)
    return policy, batch


def _brute_force_scores(policy, batch) -> np.ndarray:
    """grad log pi(a_t|s_t) of every step, one autograd call per step."""
    params = actor_parameters(policy)
    scores = []
    for t in range(batch.n_steps):
        log_prob = policy.get_distribution(batch.observations[t : t + 1]).log_prob(batch.actions[t : t + 1]).sum()
        grads = th.autograd.grad(log_prob, params)
        scores.append(th.cat([g.reshape(-1) for g in grads]).double().numpy())
    return np.array(scores)


@pytest.mark.parametrize("reward_to_go", [True, False])
def test_optimal_baseline_matches_brute_force(reward_to_go):
    policy, batch = _tiny_policy_and_batch()
    targets = np.concatenate([discounted_returns(ep.rewards, 0.9, reward_to_go) for ep in batch.episodes])
    scores = _brute_force_scores(policy, batch)
    n_params = scores.shape[1]
    episodes = [range(batch.starts[i], batch.starts[i + 1]) for i in range(batch.n_episodes)]

    # brute force, parameter by parameter: b_k = sum_i g_ik h_ik / sum_i g_ik^2
    g = np.array([[sum(scores[t, k] for t in steps) for k in range(n_params)] for steps in episodes])
    h = np.array([[sum(scores[t, k] * targets[t] for t in steps) for k in range(n_params)] for steps in episodes])
    if not reward_to_go:
        np.testing.assert_allclose(
            h,
            g * np.array([batch.episodes[i].rewards @ 0.9 ** np.arange(len(s)) for i, s in enumerate(episodes)])[:, None],
            rtol=1e-9,
            atol=1e-12,
        )
    brute = np.array(
        [
            sum(g[i, k] * h[i, k] for i in range(len(episodes))) / sum(g[i, k] ** 2 for i in range(len(episodes)))
            for k in range(n_params)
        ]
    )
    brute_loo = np.array(
        [
            [
                sum(g[j, k] * h[j, k] for j in range(len(episodes)) if j != i)
                / sum(g[j, k] ** 2 for j in range(len(episodes)) if j != i)
                for k in range(n_params)
            ]
            for i in range(len(episodes))
        ]
    )

    log_prob = lambda obs, actions: policy.get_distribution(obs).log_prob(actions)  # noqa: E731
    weights = th.as_tensor(targets, dtype=th.float32)
    score_grads, weighted_grads = per_episode_gradients(
        log_prob, actor_parameters(policy), batch, [th.ones_like(weights), weights]
    )
    np.testing.assert_allclose(score_grads.double().numpy(), g, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(weighted_grads.double().numpy(), h, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        optimal_baseline(score_grads, weighted_grads, leave_one_out=False).numpy(), brute, rtol=1e-3, atol=1e-5
    )
    np.testing.assert_allclose(optimal_baseline(score_grads, weighted_grads).numpy(), brute_loo, rtol=1e-3, atol=1e-5)

    # it minimises the batch second moment sum_i (h_ik - b g_ik)^2 of every component (E[g] = 0)
    for k in range(n_params):
        moment = lambda b: np.sum((h[:, k] - b * g[:, k]) ** 2)  # noqa: E731, B023
        assert moment(brute[k]) <= min(moment(brute[k] - 0.1), moment(brute[k] + 0.1))

    # the estimate the update uses: h_i - b_(-i) * g_i
    estimates = OptimalBaseline().estimate(score_grads, weighted_grads)
    np.testing.assert_allclose(estimates.double().numpy(), h - brute_loo * g, rtol=1e-3, atol=1e-5)


def test_per_episode_gradients_sum_to_the_batch_gradient():
    policy, batch = _tiny_policy_and_batch()
    weights = th.as_tensor(np.linspace(-1, 2, batch.n_steps), dtype=th.float32)
    params = actor_parameters(policy)
    (rows,) = per_episode_gradients(lambda o, a: policy.get_distribution(o).log_prob(a), params, batch, [weights])
    loss = (policy.get_distribution(batch.observations).log_prob(batch.actions) * weights).sum()
    full = th.cat([g.reshape(-1) for g in th.autograd.grad(loss, params)])
    th.testing.assert_close(rows.sum(dim=0), full, rtol=1e-5, atol=1e-6)
    assert covariance_trace(rows) == pytest.approx(float(((rows - rows.mean(0)) ** 2).sum() / (len(rows) - 1)), rel=1e-5)
    # the value head is not part of the policy's parameters
    assert not {id(p) for p in params} & {id(p) for p in value_parameters(policy)}


# ----- complete episodes, carry-over ---------------------------------------------------------------------


def _record_batches(model):
    """Wrap ``train`` to record the episodes of every update."""
    batches = []
    train = model.train

    def recording_train():
        batches.append(list(model.rollout_buffer.finished))
        train()

    model.train = recording_train
    return batches


def test_unfinished_episodes_carry_over_with_two_envs():
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(7)])
    model = REINFORCE("MlpPolicy", env, n_steps=5, policy_kwargs=dict(net_arch=[8]), seed=0, off_policy_correction="none")
    model.set_logger(silent_logger())
    batches = _record_batches(model)
    model.learn(14)
    # update 1 after 6 vector steps: two 3-step episodes of env 0 (6 >= 5 finished transitions);
    # env 1 has 6 steps in progress, carried over
    assert [len(ep) for ep in batches[0]] == [3, 3]
    assert [ep.carried_over for ep in batches[0]] == [0, 0]
    # update 2 one step later: env 1's episode, complete, its first 6 steps from before update 1
    (episode,) = batches[1]
    assert len(episode) == 7 and episode.carried_over == 6
    np.testing.assert_array_equal(episode.observations[:, 0], np.arange(7))
    np.testing.assert_array_equal(episode.rewards, np.ones(7))
    assert model.logger.name_to_value["train/carried_over_steps"] == 6
    assert model.rollout_buffer.n_steps_in_progress == 1  # env 0's next episode


def test_batches_sized_by_episodes():
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(7)])
    model = REINFORCE(
        "MlpPolicy", env, n_steps=None, n_episodes=3, policy_kwargs=dict(net_arch=[8]), seed=0, off_policy_correction="none"
    )
    model.set_logger(silent_logger())
    batches = _record_batches(model)
    model.learn(30)
    assert all(len(batch) >= 3 for batch in batches)
    assert sorted(len(ep) for ep in batches[0]) == [3, 3, 7]


def test_environment_reset_discards_episodes_in_progress():
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(7)])
    model = REINFORCE("MlpPolicy", env, n_steps=5, policy_kwargs=dict(net_arch=[8]), seed=0, off_policy_correction="none")
    model.set_logger(silent_logger())
    model.learn(12)
    assert model.rollout_buffer.n_steps_in_progress == 6
    batches = _record_batches(model)
    model.learn(14)  # reset_num_timesteps=True resets the environments
    np.testing.assert_array_equal(batches[0][0].observations[:, 0], np.arange(3))
    assert all(ep.carried_over == 0 for ep in batches[0])


# ----- argument checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(baseline="median"),
            r"baseline must be one of \('none', 'mean', 'value', 'optimal', 'rloo', 'rloo_std', 'time'\)",
        ),
        (dict(off_policy_correction="drop"), r"off_policy_correction must be one of \('none', 'importance', 'sync'\)"),
        (dict(truncation_as_terminal=1), "truncation_as_terminal must be True or False"),
        (dict(n_steps=None), "exactly one of n_steps .* and n_episodes"),
        (dict(n_steps=64, n_episodes=4), "exactly one of n_steps .* and n_episodes"),
        (dict(n_steps=0), r"n_steps must be an integer >= 1 or None"),
        (dict(n_steps=None, n_episodes=-2), r"n_episodes must be an integer >= 1 or None"),
        (dict(gamma=0.0), r"gamma must be a finite number in \(0.0, 1.0\]"),
        (dict(gamma=1.01), r"gamma must be a finite number in \(0.0, 1.0\]"),
        (dict(reward_to_go="yes"), "reward_to_go must be True or False"),
        (dict(normalize_advantage=None), "normalize_advantage must be True or False"),
        (dict(learning_rate=-1e-3), r"learning_rate must be a positive finite number or a schedule"),
        (dict(value_learning_rate=0), r"value_learning_rate must be a positive finite number or a schedule"),
        (dict(n_value_epochs=0), r"n_value_epochs must be an integer >= 1"),
        (dict(value_batch_size=1.5), r"value_batch_size must be an integer >= 1 or None"),
        (dict(max_grad_norm=0.0), r"max_grad_norm must be a number in \(0.0, inf\] or None"),
        (dict(diagnostics="verbose"), r"diagnostics must be one of \('off', 'basic', 'full'\)"),
    ],
)
def test_bad_arguments_raise_before_anything_is_built(kwargs, match):
    # an unknown environment id would fail later: the arguments are checked first
    with pytest.raises((TypeError, ValueError), match=match):
        REINFORCE("MlpPolicy", "NoSuchEnv-v0", **kwargs)


# ----- spaces, baselines, drop-in behaviour ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make_env, policy, baseline",
    [
        (lambda: IdentityEnv(4, ep_length=16), "MlpPolicy", "none"),
        (lambda: IdentityEnvBox(ep_length=16), "MlpPolicy", "value"),
        (lambda: IdentityEnvMultiDiscrete(2, ep_length=16), "MlpPolicy", "optimal"),
        (lambda: IdentityEnvMultiBinary(3, ep_length=16), "MlpPolicy", "mean"),
        (lambda: SimpleMultiObsEnv(random_start=False), "MultiInputPolicy", "value"),
    ],
)
def test_spaces_train(make_env, policy, baseline):
    model = REINFORCE(policy, make_env(), baseline=baseline, diagnostics="full", **FAST)
    logs = learn_and_read_logs(model, 200)
    assert logs["train/n_updates"] >= 1
    for key in ("policy_kl", "approx_kl", "ratio_mean", "ess", "grad_norm", "policy_gradient_loss", "entropy_loss"):
        assert np.isfinite(logs[f"train/{key}"]), key
    assert logs["train/policy_kl"] >= -1e-6
    assert 0.0 < logs["train/ess"] <= 1.0 + 1e-9
    assert "train/grad_variance" in logs


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("reward_to_go", [True, False])
def test_baselines_log_their_keys(baseline, reward_to_go):
    model = REINFORCE(
        "MlpPolicy",
        "CartPole-v1",
        baseline=baseline,
        reward_to_go=reward_to_go,
        normalize_advantage=baseline == "optimal",
        **FAST,
    )
    logs = learn_and_read_logs(model, 128)
    assert ("train/value_loss" in logs) == (baseline == "value")
    assert ("train/explained_variance" in logs) == (baseline != "optimal")
    assert ("train/baseline_mean" in logs) == (baseline != "none")
    # grad_variance needs per-episode gradients: "full", or "basic" with the optimal baseline (free there)
    assert ("train/grad_variance" in logs) == (baseline == "optimal")
    assert logs["train/n_episodes"] >= 1 and logs["train/batch_steps"] >= 64


def test_diagnostics_do_not_change_learning():
    params, keys = [], []
    for diagnostics in ("off", "basic", "full"):
        model = REINFORCE("MlpPolicy", "CartPole-v1", diagnostics=diagnostics, ent_coef=0.01, max_grad_norm=1.0, **FAST)
        keys.append(set(learn_and_read_logs(model, 192)))
        params.append(policy_params(model))
    assert th.equal(params[0], params[1]) and th.equal(params[0], params[2])
    off, basic, full = keys
    assert "train/policy_kl" not in off and "train/grad_norm" not in off
    assert {"train/policy_kl", "train/approx_kl", "train/ratio_std", "train/ess", "train/grad_norm"} <= basic
    assert "train/grad_variance" not in basic
    assert {"train/grad_variance", "train/policy_kl_max"} <= full


@pytest.mark.parametrize("baseline", BASELINES)
def test_save_load_predict_identical_and_baseline_state_survives(tmp_path, baseline):
    model = REINFORCE("MlpPolicy", "CartPole-v1", baseline=baseline, **FAST)
    model.set_logger(silent_logger())
    model.learn(256)
    observations = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    actions, _ = model.predict(observations, deterministic=True)
    model.save(tmp_path / "model")

    loaded = REINFORCE.load(tmp_path / "model", env=make_vec_env("CartPole-v1", n_envs=1))
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
    assert th.equal(policy_params(loaded), policy_params(model))
    assert loaded.baseline == baseline and type(loaded.baseline_state) is type(model.baseline_state)
    for key, value in vars(model.baseline_state).items():
        np.testing.assert_equal(getattr(loaded.baseline_state, key), value)
    if baseline == "value":
        assert loaded.baseline_state.n_fits == model.baseline_state.n_fits > 0
        saved_state = model.value_optimizer.state_dict()["state"]
        loaded_state = loaded.value_optimizer.state_dict()["state"]
        assert saved_state.keys() == loaded_state.keys() and len(saved_state) > 0
        for key in saved_state:
            assert th.equal(saved_state[key]["exp_avg"], loaded_state[key]["exp_avg"])
        # the loaded optimiser drives the loaded value head
        assert {id(p) for p in loaded.value_optimizer.param_groups[0]["params"]} == {
            id(p) for p in value_parameters(loaded.policy)
        }
    if baseline == "optimal":
        assert loaded.baseline_state.last_baseline is not None
    # and training continues
    loaded.set_logger(silent_logger())
    loaded.learn(128, reset_num_timesteps=False)


class CountingCallback(BaseCallback):
    def __init__(self):
        super().__init__()
        self.steps = 0
        self.rollouts = 0

    def _on_step(self) -> bool:
        self.steps += 1
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1


def test_vecnormalize_callbacks_progress_bar_tensorboard(tmp_path):
    # Pendulum: every episode is cut by the 200-step time limit, so the value bootstrap is exercised
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    model = REINFORCE(
        "MlpPolicy",
        env,
        n_steps=400,
        baseline="value",
        tensorboard_log=str(tmp_path),
        policy_kwargs=dict(net_arch=[16]),
        seed=0,
    )
    callback = CountingCallback()
    model.learn(800, callback=callback, progress_bar=True)
    assert callback.steps * 2 == model.num_timesteps == 800
    assert callback.rollouts == 2
    assert list(Path(tmp_path).rglob("events.out.tfevents.*"))
    assert model.get_vec_normalize_env() is env


def test_callback_can_stop_collection():
    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 10

    model = REINFORCE("MlpPolicy", "CartPole-v1", **FAST)
    model.learn(1000, callback=Stop())
    assert model.num_timesteps == 10 and model._n_updates == 0


class FirstRewardEnv(gym.Env):
    """Reward 1 at the first step, then 0; cut by a time limit after ``horizon`` steps. Observation: one-hot time."""

    def __init__(self, horizon: int = 10):
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(0.0, 1.0, (horizon + 1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.horizon + 1, dtype=np.float32)
        obs[self.t] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if self.t == 0 else 0.0
        self.t += 1
        return self._obs(), reward, False, self.t >= self.horizon, {}


@pytest.mark.slow
def test_full_returns_with_value_baseline_regress_v_on_the_state_value():
    """
    reward_to_go=False with the value baseline: V is regressed on the reward-to-go (a state value), so bootstrapping a
    truncation with V(s_T) adds the value of the future only. True values: V(s_0) = 1, V(s_t) = 0 for t >= 1. (Regressed
    on the episode return, V(s_t) learned 1 + gamma^10 V(s_10) ~ 1.35 at every t, and the bootstrap fed on itself.)
    """
    model = REINFORCE(
        "MlpPolicy",
        FirstRewardEnv(),
        n_steps=100,
        baseline="value",
        reward_to_go=False,
        gamma=0.99,
        learning_rate=1e-4,
        value_learning_rate=3e-3,
        n_value_epochs=10,
        value_batch_size=None,
        policy_kwargs=dict(net_arch=[16]),
        seed=0,
    )
    model.learn(20_000)
    with th.no_grad():
        values = model.policy.predict_values(th.eye(11)).flatten().numpy()
    assert abs(values[0] - 1.0) < 0.2
    assert np.abs(values[1:10]).max() < 0.2
    # the policy's targets are still the (bootstrapped) episode return at every step
    batch = EpisodeBatch.from_episodes(
        [
            Episode(
                np.eye(11, dtype=np.float32)[:10],
                np.zeros(10, dtype=np.int64),
                np.eye(10)[0],
                True,
                np.eye(11, dtype=np.float32)[10],
            )
        ],
        model.device,
        discrete_actions=True,
    )
    targets, value_targets = model.compute_returns(batch)
    bootstrap = values[10]
    np.testing.assert_allclose(targets, 1.0 + 0.99**10 * bootstrap, rtol=1e-5)
    np.testing.assert_allclose(value_targets[1:], 0.99 ** np.arange(9, 0, -1) * bootstrap, rtol=1e-5)
