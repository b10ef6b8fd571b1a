"""Each KL controller driven with chosen KL values: beta's path is checked exactly."""

import numpy as np
import pytest

from sb3_ppo_variants.ppo_kl.kl_control import make_kl_controller


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
