"""REINFORCE's carried-over episodes (off_policy_correction), the group baselines rloo / rloo_std / time, and
truncation_as_terminal."""

import copy
import itertools

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_ppo_variants.reinforce import REINFORCE
from sb3_ppo_variants.reinforce.baselines import (
    PolicyGradientBatch,
    discounted_returns,
    importance_weights,
    leave_one_out_episode_mean,
    leave_one_out_time_mean,
    make_baseline,
    weighted_returns,
)
from sb3_ppo_variants.reinforce.episodes import Episode, EpisodeBatch
from tests.helpers import learn_and_read_logs, policy_params, silent_logger
from tests.test_reinforce import CountingEnv, _record_batches

# ----- importance weights ---------------------------------------------------------------------------------


def test_importance_weights_and_weighted_returns_by_hand():
    # episode 0: 4 steps, the first 2 carried over with ratios 1.2 and 0.8; episode 1: 2 steps, on-policy
    log_ratio = np.log([1.2, 0.8, 5.0, 5.0, 7.0, 7.0])  # ratios of on-policy steps are not read
    weights = importance_weights(log_ratio, [2, 0], np.array([0, 4, 6]))
    np.testing.assert_allclose(weights, [1.2, 0.96, 0.96, 0.96, 1.0, 1.0])
    assert np.all(weights[4:] == 1.0)  # exactly 1: the plain estimator
    rewards = np.array([1.0, 2.0, 3.0, 4.0])
    # G^W_3 = 0.96 * 4, G^W_2 = 0.96 * 3 + 0.5 G^W_3, G^W_1 = 0.96 * 2 + 0.5 G^W_2, G^W_0 = 1.2 * 1 + 0.5 G^W_1
    np.testing.assert_allclose(weighted_returns(rewards, weights[:4], 0.5), [3.36, 4.32, 4.8, 3.84])
    # full return: rewards before t weighted by W_t, from t on by W_t'
    np.testing.assert_allclose(weighted_returns(rewards, weights[:4], 0.5, reward_to_go=False), [3.36, 3.12, 3.12, 3.12])
    # a bootstrap value is weighted by the last weight: + 0.5^(T-t) * 0.96 * 10
    np.testing.assert_allclose(
        weighted_returns(rewards, weights[:4], 0.5, True, 10.0),
        np.array([3.36, 4.32, 4.8, 3.84]) + 9.6 * 0.5 ** np.arange(4, 0, -1),
    )
    # with every weight 1, the plain returns
    for reward_to_go in (True, False):
        np.testing.assert_allclose(
            weighted_returns(rewards, np.ones(4), 0.9, reward_to_go, 2.0), discounted_returns(rewards, 0.9, reward_to_go, 2.0)
        )


def test_importance_weights_on_a_two_update_episode_equal_the_ratios_by_hand():
    # env 0: 3-step episodes, env 1: one 7-step episode whose first 6 steps are sampled before update 1
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(7)])
    model = REINFORCE(
        "MlpPolicy",
        env,
        n_steps=5,
        baseline="none",
        off_policy_correction="importance",
        policy_kwargs=dict(net_arch=[8]),
        seed=0,
    )
    model.set_logger(silent_logger())
    policies, weights = [], []
    train, compute = model.train, model._importance_weights

    def recording_train():
        policies.append(copy.deepcopy(model.policy))  # the policy of this update (before its step)
        train()

    def recording_weights(batch, log_prob):
        result = compute(batch, log_prob)
        weights.append((batch, result))
        return result

    model.train, model._importance_weights = recording_train, recording_weights
    model.learn(14)
    # update 1: on-policy, no weights; update 2: env 1's episode, 6 steps from before update 1
    assert weights[0][1] is None
    batch, w = weights[1]
    (episode,) = batch.episodes
    assert len(episode) == 7 and episode.carried_over == 6
    with th.no_grad():
        obs, actions = th.as_tensor(episode.observations), th.as_tensor(episode.actions).long().flatten()
        behaviour = policies[0].get_distribution(obs).log_prob(actions).double().numpy()
        current = policies[1].get_distribution(obs).log_prob(actions).double().numpy()
    # the behaviour log-probabilities were stored when the steps were sampled
    np.testing.assert_allclose(episode.behaviour_log_probs[:6], behaviour[:6], rtol=1e-6, atol=1e-7)
    ratios = np.exp(current[:6] - behaviour[:6])
    expected = np.concatenate([np.cumprod(ratios), [np.prod(ratios)]])
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert not np.allclose(w, 1.0, atol=1e-4)  # the update changed the policy: the weights matter
    logs = model.logger.name_to_value
    assert logs["train/carried_over_fraction"] == pytest.approx(6 / 7)
    assert logs["train/is_weight_min"] == pytest.approx(expected.min(), rel=1e-5)
    assert logs["train/is_ess"] == pytest.approx(expected.sum() ** 2 / (7 * (expected**2).sum()), rel=1e-5)


@pytest.mark.parametrize("baseline", ["value", "time"])
def test_one_env_carries_nothing_and_every_correction_gives_todays_result(baseline):
    results = {}
    for correction in ("none", "importance", "sync"):
        model = REINFORCE(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=64,
            baseline=baseline,
            off_policy_correction=correction,
            policy_kwargs=dict(net_arch=[16]),
            seed=0,
        )
        logs = learn_and_read_logs(model, 400)
        assert logs["train/carried_over_fraction"] == 0.0 and logs["train/carried_over_steps"] == 0
        results[correction] = policy_params(model)
    assert th.equal(results["importance"], results["none"]) and th.equal(results["sync"], results["none"])


def test_sync_runs_unfinished_episodes_to_their_end_then_resets():
    env = DummyVecEnv([lambda: CountingEnv(3), lambda: CountingEnv(7)])
    model = REINFORCE("MlpPolicy", env, n_steps=5, off_policy_correction="sync", policy_kwargs=dict(net_arch=[8]), seed=0)
    model.set_logger(silent_logger())
    batches = _record_batches(model)
    model.learn(20)
    # after 6 steps two 3-step episodes are done; env 1's episode runs to its end (step 7), env 0's 7th step is dropped
    assert [len(ep) for ep in batches[0]] == [3, 3, 7]
    assert all(ep.carried_over == 0 for batch in batches for ep in batch)
    # then both environments were reset: the next batch starts at observation 0 again
    np.testing.assert_array_equal(batches[1][0].observations[:, 0], np.arange(3))
    np.testing.assert_array_equal(batches[1][-1].observations[:, 0], np.arange(7))
    assert model.logger.name_to_value["train/discarded_steps"] == 1


# ----- an exact gradient on a toy problem -----------------------------------------------------------------
# One state, two actions, softmax logits theta; reward = the action; the episode ends after action 0 or after 3 steps.


def _toy_exact_gradient(theta: np.ndarray) -> np.ndarray:
    logits = th.tensor(theta, requires_grad=True)
    p = th.softmax(logits, 0)
    value = th.zeros((), dtype=th.float64)
    for length in (1, 2, 3):
        for actions in itertools.product((0, 1), repeat=length):
            if any(a == 0 for a in actions[:-1]) or (length < 3 and actions[-1] == 1):
                continue  # not a complete episode
            value = value + th.prod(p[list(actions)]) * sum(actions)
    (grad,) = th.autograd.grad(value, logits)
    return grad.numpy()


def _toy_episode(rng, p_new: np.ndarray, p_old: np.ndarray, carried: int) -> tuple[list[int], np.ndarray]:
    """:return: the actions and log pi_new - log mu of each step (mu = p_old for the first ``carried`` steps)"""
    actions, log_ratio = [], []
    for t in range(3):
        p = p_old if t < carried else p_new
        a = int(rng.random() < p[1])
        actions.append(a)
        log_ratio.append(np.log(p_new[a]) - np.log(p[a]))
        if a == 0:
            break
    return actions, np.array(log_ratio)


def _toy_estimates(baseline: str, correction: str, n_batches: int = 1500, n_episodes: int = 4, seed: int = 0):
    theta, theta_old = np.array([0.2, -0.1]), np.array([-0.8, 0.9])
    p_new, p_old = np.exp(theta) / np.exp(theta).sum(), np.exp(theta_old) / np.exp(theta_old).sum()
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(n_batches):
        # every episode's first step was sampled before the previous update (by p_old) unless on-policy
        carried = 0 if correction == "on-policy" else 1
        episodes = [_toy_episode(rng, p_new, p_old, carried) for _ in range(n_episodes)]
        starts = np.concatenate([[0], np.cumsum([len(a) for a, _ in episodes])])
        actions = np.concatenate([a for a, _ in episodes])
        rewards = actions.astype(np.float64)
        weights = None
        if correction == "importance":
            weights = importance_weights(np.concatenate([r for _, r in episodes]), [carried] * n_episodes, starts)
            targets = np.concatenate(
                [weighted_returns(rewards[s:e], weights[s:e], 1.0) for s, e in itertools.pairwise(starts)]
            )
        else:
            targets = np.concatenate([discounted_returns(rewards[s:e], 1.0) for s, e in itertools.pairwise(starts)])
        batch = EpisodeBatch(None, th.as_tensor(actions), rewards, None, starts, [None] * n_episodes)  # type: ignore[arg-type]
        inputs = PolicyGradientBatch(batch, targets, None, th.zeros(len(actions)), None, [], False, weights=weights)  # type: ignore[arg-type]
        advantages = make_baseline(baseline).policy_gradient(inputs).advantages.double().numpy()
        scores = np.eye(2)[actions] - p_new  # grad of log softmax
        estimates.append((scores * advantages[:, None]).sum(axis=0) / n_episodes)
    return np.array(estimates), _toy_exact_gradient(theta)


@pytest.mark.parametrize(
    "baseline, correction",
    [("none", "on-policy"), ("rloo", "on-policy"), ("time", "on-policy"), ("none", "importance"), ("time", "importance")],
)
def test_estimator_is_unbiased_on_a_toy_problem(baseline, correction):
    estimates, exact = _toy_estimates(baseline, correction)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) < 3 * standard_error), (estimates.mean(axis=0), exact)


def test_uncorrected_carried_steps_are_biased_on_the_toy_problem():
    # the same check fails without the importance weights: the test above can fail
    estimates, exact = _toy_estimates("none", "none")
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - exact) > 3 * standard_error)


def test_rloo_std_is_unbiased_in_direction_on_the_toy_problem():
    estimates, exact = _toy_estimates("rloo_std", "on-policy", n_episodes=6)
    mean = estimates.mean(axis=0)
    cosine = mean @ exact / (np.linalg.norm(mean) * np.linalg.norm(exact))
    assert cosine > 0.999


# ----- the group baselines against brute force ---------------------------------------------------------------

TARGETS = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 4.0, 4.5, 0.5, 7.0])
STARTS = np.array([0, 2, 3, 6, 9])  # episodes of lengths 2, 1, 3, 3


def test_rloo_baseline_against_brute_force():
    episodes = [TARGETS[s:e] for s, e in itertools.pairwise(STARTS)]
    returns = [ep[0] for ep in episodes]
    mean, std = leave_one_out_episode_mean(TARGETS, STARTS)
    for i in range(len(episodes)):
        others = [r for j, r in enumerate(returns) if j != i]
        assert mean[i] == pytest.approx(sum(others) / len(others))
        assert std[i] == pytest.approx(np.std(others))
    batch = EpisodeBatch(None, th.zeros(9), TARGETS, None, STARTS, [None] * 4)  # type: ignore[arg-type]
    per_step = make_baseline("rloo").per_step(TARGETS, batch, None)
    np.testing.assert_allclose(per_step, np.repeat(mean, np.diff(STARTS)))
    # rloo_std: the advantages of episode i divided by the std of the other returns
    inputs = PolicyGradientBatch(batch, TARGETS, None, th.zeros(9), None, [], False)  # type: ignore[arg-type]
    advantages = make_baseline("rloo_std").policy_gradient(inputs).advantages.double().numpy()
    np.testing.assert_allclose(advantages, (TARGETS - per_step) / np.repeat(std, np.diff(STARTS)), rtol=1e-6)
    # a single episode: baseline 0, no scaling
    np.testing.assert_array_equal(leave_one_out_episode_mean(np.array([3.0, 1.0]), np.array([0, 2]))[0], [0.0])


def test_time_baseline_against_brute_force():
    episodes = [TARGETS[s:e] for s, e in itertools.pairwise(STARTS)]
    expected = []
    for i, episode in enumerate(episodes):
        for t in range(len(episode)):
            others = [ep[t] for j, ep in enumerate(episodes) if j != i and len(ep) > t]
            expected.append(np.mean(others) if others else 0.0)
    np.testing.assert_allclose(leave_one_out_time_mean(TARGETS, STARTS), expected)
    assert expected[1] == pytest.approx((6.0 + 0.5) / 2)  # t = 1 of episode 0: episodes 2 and 3 reach t = 1


# ----- truncation_as_terminal ------------------------------------------------------------------------------


@pytest.mark.parametrize("reward_to_go", [True, False])
def test_truncation_as_terminal_drops_the_bootstrap_by_hand(reward_to_go):
    rewards = np.array([1.0, 2.0, 3.0])
    obs = np.array([[0.0], [1.0], [2.0]], dtype=np.float32)
    terminal = np.array([3.0], dtype=np.float32)
    episode = Episode(obs, np.zeros(3, dtype=np.int64), rewards, truncated=True, terminal_observation=terminal)
    targets = {}
    for as_terminal in (False, True):
        model = REINFORCE(
            "MlpPolicy",
            CountingEnv(3),
            gamma=0.5,
            baseline="value",
            reward_to_go=reward_to_go,
            truncation_as_terminal=as_terminal,
            n_steps=64,
            policy_kwargs=dict(net_arch=[16]),
            seed=0,
        )
        batch = EpisodeBatch.from_episodes([episode], model.device, discrete_actions=True)
        targets[as_terminal], value_targets = model.compute_returns(batch)
        with th.no_grad():
            value = model.policy.predict_values(th.as_tensor(terminal[None])).double().item()
    # G_2 = 3, G_1 = 2 + 0.5 * 3, G_0 = 1 + 0.5 * 3.5: the episode ends at the truncation
    by_hand = [2.75, 3.5, 3.0] if reward_to_go else [2.75, 2.75, 2.75]
    np.testing.assert_allclose(targets[True], by_hand)
    np.testing.assert_allclose(value_targets, [2.75, 3.5, 3.0])
    # bootstrapped: + 0.5^(T-t) V(s_T)
    bootstrap = value * (0.5 ** np.arange(3, 0, -1) if reward_to_go else np.full(3, 0.125))
    np.testing.assert_allclose(targets[False] - targets[True], bootstrap, rtol=1e-6)


def test_new_arguments_are_saved_and_loaded(tmp_path):
    model = REINFORCE(
        "MlpPolicy", "CartPole-v1", baseline="time", off_policy_correction="sync", truncation_as_terminal=True, n_steps=64
    )
    model.save(tmp_path / "model")
    loaded = REINFORCE.load(tmp_path / "model")
    assert (loaded.baseline, loaded.off_policy_correction, loaded.truncation_as_terminal) == ("time", "sync", True)
