"""Each estimator of the shared diagnostics module against a value computed by hand."""

import math

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    SquashedDiagGaussianDistribution,
)

from sb3_ppo_variants.common.diagnostics import GradientStatistics, RatioStatistics
from sb3_ppo_variants.common.distributions import DistributionSnapshot, k3, resolve_kl_estimator


def test_k3_by_hand():
    ratios = th.tensor([0.5, 1.0, 2.0])
    # (r - 1) - log r: 0.5 -> -0.5 + log 2; 1 -> 0; 2 -> 1 - log 2; mean = 0.5 / 3
    assert k3(th.log(ratios)).mean().item() == pytest.approx(0.5 / 3, rel=1e-6)
    assert k3(th.zeros(4)).mean().item() == 0.0


def ess_of(weights: th.Tensor) -> float:
    stats = RatioStatistics()
    stats.add(weights)
    return stats.summary()["ess"]


def test_effective_sample_size_by_hand():
    assert ess_of(th.ones(10)) == pytest.approx(1.0)
    # one weight carries everything: (1)^2 / (4 * 1) = 1/4
    assert ess_of(th.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25)
    # w = (1, 2, 3): 36 / (3 * 14) = 6/7
    assert ess_of(th.tensor([1.0, 2.0, 3.0])) == pytest.approx(6 / 7)


def test_effective_sample_size_where_float32_ratios_leave_their_range():
    # exp(log_ratio) underflows to 0 below about -104 and overflows above 88: the unclipped surrogate gets there
    # (the medium surrogates' unclipped runs logged NaN on up to 38 % of their updates before the log ratios were used)
    def ess_with_logs(log_ratio: th.Tensor, logs: bool = True) -> float:
        stats = RatioStatistics()
        stats.add(th.exp(log_ratio), log_ratio if logs else None)
        return stats.summary()["ess"]

    def by_hand(log_ratio: list[float]) -> float:
        weights = np.exp(np.array(log_ratio) - max(log_ratio))  # the ESS is invariant to scaling the weights
        return float(weights.sum() ** 2 / (len(weights) * (weights**2).sum()))

    underflow = [-120.0, -200.0, -121.0, -300.0]
    assert th.equal(th.exp(th.tensor(underflow)), th.zeros(4))
    assert ess_with_logs(th.tensor(underflow)) == pytest.approx(by_hand(underflow))  # (1 + e^-1)^2 / (4 (1 + e^-2))
    assert by_hand(underflow) == pytest.approx((1 + math.exp(-1)) ** 2 / (4 * (1 + math.exp(-2))))
    overflow = [100.0, 90.0, 0.0, 0.0]
    assert th.isinf(th.exp(th.tensor(overflow))).sum() == 2
    assert ess_with_logs(th.tensor(overflow)) == pytest.approx(by_hand(overflow))  # ~0.25, not 2/4
    equal = [-150.0] * 4
    assert ess_with_logs(th.tensor(equal)) == 1.0  # equal weights, however small
    # without the log ratios the ESS is not known from the ratios; NaN ratios stay NaN
    assert math.isnan(ess_with_logs(th.tensor(underflow), logs=False))
    assert math.isnan(ess_with_logs(th.tensor([float("nan"), 0.0, 0.0])))
    # ordinary minibatches beside them keep the formula on the ratios
    stats = RatioStatistics()
    stats.add(th.exp(th.tensor(underflow)), th.tensor(underflow))
    stats.add(th.tensor([1.0, 2.0, 3.0]), th.log(th.tensor([1.0, 2.0, 3.0])))
    assert stats.summary()["ess"] == pytest.approx((by_hand(underflow) + 6 / 7) / 2)


def test_clip_fractions_by_hand():
    stats = RatioStatistics()
    stats.add(th.tensor([0.7, 0.85, 1.0, 1.1, 1.25, 1.5]))
    stats.add(th.tensor([0.79, 1.0]))
    summary = stats.summary(clip_range=0.2)
    # minibatch 1: below 0.8: 0.7 (1/6); above 1.2: 1.25, 1.5 (2/6); minibatch 2: 1/2 below, none above
    assert summary["clip_fraction_low"] == pytest.approx((1 / 6 + 1 / 2) / 2)
    assert summary["clip_fraction_high"] == pytest.approx((2 / 6 + 0) / 2)
    assert "clip_fraction_low" not in stats.summary()


def test_ratio_statistics_of_equal_minibatches_by_hand():
    """Minibatches of one size (read as rows): the same quantities as for unequal ones."""
    stats = RatioStatistics()
    stats.add(th.tensor([0.7, 1.0, 1.3]))
    stats.add(th.tensor([1.0, 1.0, 1.25]))
    summary = stats.summary(clip_range=0.2)
    # ESS per minibatch: (sum w)^2 / (n sum w^2)
    ess = [3.0**2 / (3 * (0.49 + 1 + 1.69)), 3.25**2 / (3 * (1 + 1 + 1.5625))]
    assert summary["ess"] == pytest.approx(sum(ess) / 2)
    assert summary["clip_fraction_low"] == pytest.approx((1 / 3 + 0) / 2)
    assert summary["clip_fraction_high"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert summary["ratio_max"] == pytest.approx(1.3) and summary["ratio_min"] == pytest.approx(0.7)


def grad_snr(gradients: list[th.Tensor]) -> float:
    stats = GradientStatistics()
    for gradient in gradients:
        stats.add(gradient, gradient.norm())
    return stats.snr()


def test_grad_snr_by_hand():
    g1, g2 = th.tensor([1.0, 0.0]), th.tensor([3.0, 2.0])
    # mean = (2, 1): signal 5; deviations (-1,-1), (1, 1): mean squared norm 2 -> SNR 2.5
    assert grad_snr([g1, g2]) == pytest.approx(2.5)
    # identical gradients: no noise
    assert grad_snr([g1, g1]) == math.inf
    assert math.isnan(grad_snr([g1]))


def test_gradient_statistics_mean_norm():
    stats = GradientStatistics()
    stats.add(th.tensor([3.0, 4.0]), th.tensor(5.0))
    stats.add(th.tensor([0.0, 1.0]), th.tensor(1.0))
    assert stats.mean_norm() == pytest.approx(3.0)
    assert stats.count == 2


def test_ratio_statistics_pooled_by_hand():
    stats = RatioStatistics()
    stats.add(th.tensor([1.0, 1.0]))
    stats.add(th.tensor([0.5, 1.5, 1.0, 1.0]))
    summary = stats.summary()
    values = np.array([1.0, 1.0, 0.5, 1.5, 1.0, 1.0])
    assert summary["ratio_mean"] == pytest.approx(values.mean())
    assert summary["ratio_std"] == pytest.approx(values.std())
    assert summary["ratio_min"] == 0.5
    assert summary["ratio_max"] == 1.5
    # mean of per-minibatch ESS: 1 and 16 / (4 * 4.5)
    assert summary["ess"] == pytest.approx((1 + 16 / 18) / 2)
    assert RatioStatistics().summary() == {}


@pytest.mark.parametrize("algo", ["PPOKL", "PPOClip", "TRPOKL", "REINFORCE"])
def test_diagnostics_level_validation(algo):
    import sb3_ppo_variants

    with pytest.raises(ValueError, match=r"diagnostics must be one of \('off', 'basic', 'full'\), got 'verbose'"):
        getattr(sb3_ppo_variants, algo)("MlpPolicy", "CartPole-v1", diagnostics="verbose")


def test_gaussian_kl_by_hand():
    old = DiagGaussianDistribution(2).proba_distribution(th.tensor([[0.0, 1.0]]), th.log(th.tensor([[1.0, 2.0]])))
    new = DiagGaussianDistribution(2).proba_distribution(th.tensor([[1.0, 1.0]]), th.log(th.tensor([[1.0, 1.0]])))
    snapshot = DistributionSnapshot.from_distribution(old)
    # dim 1: (mu diff 1) -> 0.5; dim 2: log(1/2) + 4/2 - 1/2 = 1.5 - log 2
    expected = 0.5 + 1.5 - math.log(2)
    assert snapshot.kl_to(new).item() == pytest.approx(expected, rel=1e-6)


def test_categorical_and_bernoulli_kl_by_hand():
    p, q = th.tensor([[0.5, 0.5]]), th.tensor([[0.25, 0.75]])
    old = CategoricalDistribution(2).proba_distribution(th.log(p))
    new = CategoricalDistribution(2).proba_distribution(th.log(q))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert DistributionSnapshot.from_distribution(old).kl_to(new).item() == pytest.approx(expected, rel=1e-6)
    # Bernoulli with two independent dims, each p=0.5 vs q=0.75: same value per dim
    logit = lambda x: math.log(x / (1 - x))  # noqa: E731
    old_b = BernoulliDistribution(2).proba_distribution(th.tensor([[0.0, 0.0]]))
    new_b = BernoulliDistribution(2).proba_distribution(th.tensor([[logit(0.75), logit(0.75)]]))
    assert DistributionSnapshot.from_distribution(old_b).kl_to(new_b).item() == pytest.approx(2 * expected, rel=1e-6)


def test_multicategorical_kl_sums_subspaces_and_indexing():
    old = MultiCategoricalDistribution([2, 3]).proba_distribution(th.zeros(3, 5))
    new_logits = th.zeros(3, 5)
    new_logits[1, 0] = 1.0
    new = MultiCategoricalDistribution([2, 3]).proba_distribution(new_logits)
    kl = DistributionSnapshot.from_distribution(old).kl_to(new)
    q = th.softmax(th.tensor([1.0, 0.0]), 0)
    expected = float((0.5 * (th.log(th.tensor(0.5)) - th.log(q))).sum())
    assert kl[0].item() == pytest.approx(0.0, abs=1e-7)
    assert kl[1].item() == pytest.approx(expected, rel=1e-6)
    # indexing picks the same rows
    snapshot = DistributionSnapshot.from_distribution(old)[np.array([1])]
    sub_new = MultiCategoricalDistribution([2, 3]).proba_distribution(new_logits[[1]])
    assert snapshot.kl_to(sub_new).item() == pytest.approx(expected, rel=1e-6)


def test_closed_form_kl_matches_torch_values_and_gradients():
    """The snapshot's tensor formulas equal torch.distributions.kl_divergence, value and gradient."""
    from torch.distributions import Categorical, Normal, kl_divergence

    generator = th.Generator().manual_seed(0)
    mean, log_std = th.randn(6, 3, generator=generator), th.randn(6, 3, generator=generator)
    new_mean = th.randn(6, 3, generator=generator).requires_grad_()
    new_log_std = th.randn(6, 3, generator=generator).requires_grad_()
    old = DiagGaussianDistribution(3).proba_distribution(mean, log_std)
    new = DiagGaussianDistribution(3).proba_distribution(new_mean, new_log_std)
    ours = DistributionSnapshot.from_distribution(old).kl_to(new)
    reference = kl_divergence(Normal(mean, log_std.exp()), Normal(new_mean, new_log_std.exp())).sum(-1)
    th.testing.assert_close(ours, reference)
    grads = th.autograd.grad(ours.sum(), (new_mean, new_log_std), retain_graph=True)
    th.testing.assert_close(grads, th.autograd.grad(reference.sum(), (new_mean, new_log_std), retain_graph=True))
    assert_mean_kl_matches(DistributionSnapshot.from_distribution(old), new, reference, (new_mean, new_log_std))

    # categorical, including an action the old policy never takes (probability 0 contributes 0, not NaN)
    logits = th.randn(6, 4, generator=generator)
    logits[0, 1] = -float("inf")
    new_logits = th.randn(6, 4, generator=generator).requires_grad_()
    old_c = CategoricalDistribution(4).proba_distribution(logits)
    new_c = CategoricalDistribution(4).proba_distribution(new_logits)
    ours = DistributionSnapshot.from_distribution(old_c).kl_to(new_c)
    reference = kl_divergence(Categorical(logits=logits), Categorical(logits=new_logits))
    assert th.isfinite(ours).all()
    th.testing.assert_close(ours, reference)
    grads = th.autograd.grad(ours.sum(), new_logits, retain_graph=True)
    th.testing.assert_close(grads, th.autograd.grad(reference.sum(), new_logits, retain_graph=True))
    assert_mean_kl_matches(DistributionSnapshot.from_distribution(old_c), new_c, reference, (new_logits,))

    # multi-categorical: the sum over sub-spaces of the categorical KL
    new_logits = th.randn(6, 5, generator=generator).requires_grad_()
    old_m = MultiCategoricalDistribution([2, 3]).proba_distribution(th.randn(6, 5, generator=generator))
    new_m = MultiCategoricalDistribution([2, 3]).proba_distribution(new_logits)
    reference = sum(kl_divergence(p, q) for p, q in zip(old_m.distribution, new_m.distribution, strict=True))
    th.testing.assert_close(DistributionSnapshot.from_distribution(old_m).kl_to(new_m), reference)
    assert_mean_kl_matches(DistributionSnapshot.from_distribution(old_m), new_m, reference, (new_logits,))


def assert_mean_kl_matches(snapshot, new, reference_per_state, inputs):
    """mean_kl_to (PPOKL's per-minibatch penalty) equals the mean of torch's KL, value and gradient."""
    ours = snapshot.mean_kl_to(new)
    th.testing.assert_close(ours, reference_per_state.mean())
    grads = th.autograd.grad(ours, inputs, retain_graph=True)
    th.testing.assert_close(grads, th.autograd.grad(reference_per_state.mean(), inputs))


def test_kl_estimator_resolution():
    assert resolve_kl_estimator("auto", SquashedDiagGaussianDistribution(2)) == "analytic"
    assert resolve_kl_estimator("sample", CategoricalDistribution(2)) == "sample"


def test_categorical_kl_finite_when_an_action_is_masked_under_both_policies():
    """Action masking: a -inf logit under the old *and* the new policy contributes 0, not NaN (0 * inf)."""
    old_logits = th.tensor([[0.0, 1.0, -math.inf], [2.0, -math.inf, 0.5]])
    new_logits = th.tensor([[0.5, 0.2, -math.inf], [1.0, -math.inf, 0.0]], requires_grad=True)
    old = CategoricalDistribution(3).proba_distribution(old_logits)
    new = CategoricalDistribution(3).proba_distribution(new_logits)
    snapshot = DistributionSnapshot.from_distribution(old)
    # the KL over the two unmasked actions only, by hand
    p = th.stack([th.softmax(old_logits[0, :2], -1), th.softmax(old_logits[1, [0, 2]], -1)])
    q = th.stack([th.softmax(new_logits.detach()[0, :2], -1), th.softmax(new_logits.detach()[1, [0, 2]], -1)])
    expected = (p * (p.log() - q.log())).sum(-1)
    per_state = snapshot.kl_to(new)
    th.testing.assert_close(per_state, expected)
    mean = snapshot.mean_kl_to(new)
    th.testing.assert_close(mean, expected.mean())
    (gradient,) = th.autograd.grad(mean, new_logits)
    assert th.isfinite(gradient).all()
