"""Each KL controller driven with chosen KL values: beta's path is checked exactly."""

import numpy as np
import pytest

from sb3_ppo_variants import PPOKL
from sb3_ppo_variants.ppo_kl.kl_control import make_kl_controller
from tests.helpers import silent_logger


def beta_path(controller, kls):
    return [controller.update(kl) for kl in kls]


def test_adaptive_controller_paper_rule():
    controller = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01)
    # 0.001 < 0.01/1.5 -> halve; 0.01 on target -> keep; 0.02 > 0.015 -> double; boundaries are kept
    kls = [0.001, 0.001, 0.01, 0.02, 0.01 / 1.5, 0.015, 0.016]
    assert beta_path(controller, kls) == [0.5, 0.25, 0.25, 0.5, 0.5, 0.5, 1.0]


def test_adaptive_controller_custom_tolerance_and_factor():
    controller = make_kl_controller("adaptive", kl_coef=2.0, kl_target=0.1, kl_tolerance=2.0, kl_factor=4.0)
    assert beta_path(controller, [0.06, 0.04, 0.21]) == [2.0, 0.5, 2.0]


def test_fixed_controller_never_moves():
    controller = make_kl_controller("fixed", kl_coef=3.0, kl_target=0.01)
    assert beta_path(controller, [0.0, 1.0, 100.0]) == [3.0, 3.0, 3.0]


def test_proportional_controller_ziegler():
    controller = make_kl_controller("proportional", kl_coef=1.0, kl_target=0.01, kl_gain=0.1)
    # e = clip(d/target - 1, -0.2, 0.2): 0.011 -> 0.1; 0.1 -> 0.2 (clipped); 0 -> -0.2 (clipped)
    path = beta_path(controller, [0.011, 0.1, 0.0])
    expected = [1.0 * 1.01]
    expected.append(expected[-1] * 1.02)
    expected.append(expected[-1] * 0.98)
    assert path == pytest.approx(expected, rel=1e-12)


def test_bounds_clip_warn_once_and_count():
    controller = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, kl_coef_min=0.5, kl_coef_max=2.0)
    with pytest.warns(UserWarning, match="hit its bound"):
        path = beta_path(controller, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert path == [2.0, 2.0, 2.0, 1.0, 0.5, 0.5]
    assert controller.n_bound_hits == 3


def test_non_finite_kl_leaves_beta_unchanged():
    controller = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01)
    with pytest.warns(UserWarning, match="non-finite"):
        assert controller.update(float("nan")) == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_controller="pid"), r"kl_controller must be one of \('adaptive', 'fixed', 'proportional'\)"),
        (dict(kl_target=0.0), "kl_target must be a finite number > 0"),
        (dict(kl_target=-0.01), "kl_target must be a finite number > 0"),
        (dict(kl_coef=0.0), "kl_coef must be a finite number > 0"),
        (dict(kl_coef=float("inf")), "kl_coef must be a finite number > 0"),
        (dict(kl_tolerance=1.0), "kl_tolerance must be a finite number > 1"),
        (dict(kl_factor=0.5), "kl_factor must be a finite number > 1"),
        (dict(kl_controller="proportional", kl_gain=0.0), "kl_gain must be a finite number > 0"),
        (dict(kl_coef_min=2.0, kl_coef_max=1.0), "kl_coef_min must be < kl_coef_max"),
        (dict(kl_coef=10.0, kl_coef_max=5.0), r"kl_coef must lie in \[kl_coef_min, kl_coef_max\]"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = dict(kl_controller="adaptive", kl_coef=1.0, kl_target=0.01) | kwargs
    with pytest.raises(ValueError, match=message):
        make_kl_controller(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_coef="1.0"), "kl_coef must be a finite number > 0"),
        (dict(kl_target=None), "kl_target must be a finite number > 0"),
        (dict(kl_coef_max=True), "kl_coef_max must be a finite number > 0"),
        (dict(kl_factor=[2.0]), "kl_factor must be a finite number > 1"),
        (dict(kl_controller="proportional", kl_gain=False), "kl_gain must be a finite number > 0"),
    ],
)
def test_arguments_of_the_wrong_type(kwargs, message):
    arguments = dict(kl_controller="adaptive", kl_coef=1.0, kl_target=0.01) | kwargs
    with pytest.raises(TypeError, match=message):
        make_kl_controller(**arguments)


def test_numpy_numbers_are_accepted_and_stored_as_floats():
    controller = make_kl_controller("proportional", kl_coef=np.float32(2.0), kl_target=np.float64(0.01), kl_gain=np.int64(1))
    assert (controller.kl_coef, controller.kl_target, controller.gain) == (2.0, 0.01, 1.0)
    assert all(type(value) is float for value in (controller.kl_coef, controller.kl_target, controller.gain))


def test_adaptive_controller_explicit_thresholds_and_factors_rllib():
    # RLlib's rule: beta * 1.5 above 2 * target, beta * 0.5 below target / 2, unchanged in between (boundaries kept)
    controller = make_kl_controller(
        "adaptive", kl_coef=1.0, kl_target=0.01, kl_min=0.005, kl_max=0.02, kl_factor_up=1.5, kl_factor_down=0.5
    )
    kls = [0.03, 0.03, 0.01, 0.004, 0.02, 0.005, 0.021, 0.0]
    assert beta_path(controller, kls) == [1.5, 2.25, 2.25, 1.125, 1.125, 1.125, 1.6875, 0.84375]


def test_adaptive_controller_each_explicit_setting_alone():
    # the others keep the paper's rule: thresholds target / tolerance, target * tolerance, factor up, division down
    only_max = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, kl_max=0.05)
    assert beta_path(only_max, [0.04, 0.06, 0.001]) == [1.0, 2.0, 1.0]
    only_up = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, kl_factor_up=3.0)
    assert beta_path(only_up, [0.02, 0.001]) == [3.0, 1.5]
    only_down = make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, kl_factor_down=0.25)
    assert beta_path(only_down, [0.001, 0.02]) == [0.25, 0.5]


def test_adaptive_controller_default_is_todays_rule_bit_for_bit():
    kls = list(np.random.default_rng(0).lognormal(np.log(0.01), 1.0, size=200))
    today = make_kl_controller("adaptive", kl_coef=0.7, kl_target=0.01, kl_tolerance=1.3, kl_factor=3.0)
    # explicit thresholds equal to today's derived ones give the same betas, bit for bit
    explicit = make_kl_controller(
        "adaptive", kl_coef=0.7, kl_target=0.01, kl_tolerance=1.3, kl_factor=3.0, kl_min=0.01 / 1.3, kl_max=0.01 * 1.3
    )
    path = beta_path(today, kls)
    assert path == beta_path(explicit, kls)
    assert len(set(path)) > 3  # the path moved both ways
    # the path by hand: divide by 3 below 0.01 / 1.3, multiply by 3 above 0.01 * 1.3
    beta, expected = 0.7, []
    for kl in kls:
        beta = beta / 3.0 if kl < 0.01 / 1.3 else beta * 3.0 if kl > 0.01 * 1.3 else beta
        expected.append(min(max(beta, 1e-6), 1e6))
        beta = expected[-1]
    assert path == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kl_min=0.02), r"kl_min <= kl_target <= kl_max"),
        (dict(kl_max=0.005), r"kl_min <= kl_target <= kl_max"),
        (dict(kl_min=0.01, kl_max=0.01), r"kl_min < kl_max"),
        (dict(kl_min=0.0), r"kl_min must be"),
        (dict(kl_factor_up=1.0), r"kl_factor_up must be"),
        (dict(kl_factor_down=1.5), r"kl_factor_down must be"),
        (dict(kl_factor_down=0.0), r"kl_factor_down must be"),
    ],
)
def test_explicit_thresholds_and_factors_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_kl_controller("adaptive", kl_coef=1.0, kl_target=0.01, **kwargs)


def test_ppo_kl_beta_path_follows_the_explicit_rule(tmp_path):
    # beta's path in training: after each update, kl_coef_next = rule(kl_coef, policy_kl of that update)
    settings = dict(kl_min=0.002, kl_max=0.008, kl_factor_up=1.5, kl_factor_down=0.5)
    model = PPOKL(
        "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, n_epochs=4, learning_rate=1e-2, kl_target=0.004, seed=0,
        policy_kwargs=dict(net_arch=[16]), **settings,
    )  # fmt: skip
    model.set_logger(silent_logger())
    moves = set()
    for _ in range(8):
        model.learn(64, reset_num_timesteps=False)
        logs = model.logger.name_to_value
        beta, kl, beta_next = logs["train/kl_coef"], logs["train/policy_kl"], logs["train/kl_coef_next"]
        expected = beta * 1.5 if kl > 0.008 else beta * 0.5 if kl < 0.002 else beta
        assert beta_next == expected
        moves.add(float(np.sign(beta_next - beta)))
    assert moves == {-1.0, 0.0, 1.0}  # beta went down, stayed, went up
    model.save(tmp_path / "model")
    loaded = PPOKL.load(tmp_path / "model", kl_max=0.01)
    assert (loaded.kl_min, loaded.kl_max, loaded.kl_control.thresholds()) == (0.002, 0.01, (0.002, 0.01))
    assert loaded.kl_control.kl_coef == model.kl_control.kl_coef
