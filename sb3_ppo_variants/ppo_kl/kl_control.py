"""Controllers of the KL penalty coefficient beta of PPO-penalty.

Each controller is a small object holding beta and its own state; the algorithm calls
``update(kl)`` once per policy update with the mean KL(pi_old || pi_new) of that update and uses
``kl_coef`` for the next one. The objects are plain Python, so SB3's ``save``/``load`` pickles them
with the model and training continues with the same beta after ``load``.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any, Literal

from sb3_ppo_variants.common.validation import check_choice, check_float

KLControllerName = Literal["adaptive", "fixed", "proportional"]
KL_CONTROLLERS: tuple[KLControllerName, ...] = ("adaptive", "fixed", "proportional")


class KLController(ABC):
    """
    Base class: holds beta, keeps it inside [kl_coef_min, kl_coef_max] and warns once when a bound is hit.

    :param kl_coef: initial beta (> 0)
    :param kl_target: target KL per update d_targ (> 0)
    :param kl_coef_min: lower bound on beta (> 0)
    :param kl_coef_max: upper bound on beta (> kl_coef_min); guards against an exploding penalty
    :param kl_hold_lr_fraction: beta is not decreased while the learning rate is below this fraction of its initial
        value (in [0, 1]; 0: never held). An annealed learning rate shrinks the step whatever beta is, so without the
        hold the controller answers a schedule going to 0 by halving beta at every late update down to its floor,
        and a resumed run (schedule restarted) then takes huge steps.
    """

    name: str = ""
    #: beta decreases held since construction (saved with the model; models saved before it was added read 0)
    n_held: int = 0
    kl_hold_lr_fraction: float = 0.0

    def __init__(
        self,
        kl_coef: float,
        kl_target: float,
        kl_coef_min: float = 1e-6,
        kl_coef_max: float = 1e6,
        kl_hold_lr_fraction: float = 0.0,
    ) -> None:
        check_float("kl_hold_lr_fraction", kl_hold_lr_fraction, low=0.0, high=1.0)
        for name, value in (
            ("kl_coef", kl_coef),
            ("kl_target", kl_target),
            ("kl_coef_min", kl_coef_min),
            ("kl_coef_max", kl_coef_max),
        ):
            check_float(name, value, low=0.0, low_open=True)
        if kl_coef_min >= kl_coef_max:
            raise ValueError(f"kl_coef_min must be < kl_coef_max, got kl_coef_min={kl_coef_min}, kl_coef_max={kl_coef_max}")
        if not kl_coef_min <= kl_coef <= kl_coef_max:
            raise ValueError(f"kl_coef must lie in [kl_coef_min, kl_coef_max] = [{kl_coef_min}, {kl_coef_max}], got {kl_coef}")
        self.kl_coef = float(kl_coef)
        self.kl_target = float(kl_target)
        self.kl_coef_min = float(kl_coef_min)
        self.kl_coef_max = float(kl_coef_max)
        self.kl_hold_lr_fraction = float(kl_hold_lr_fraction)
        self.n_bound_hits = 0  # how many updates ended with beta clipped to a bound
        self.n_held = 0
        self._warned = False

    @abstractmethod
    def _proposal(self, kl: float) -> float:
        """:return: the new beta before it is clipped to the bounds"""

    def update(self, kl: float, lr_fraction: float = 1.0) -> float:
        """
        Adapt beta once, after a whole policy update.

        :param kl: mean KL(pi_old || pi_new) of that update; a non-finite value leaves beta unchanged
        :param lr_fraction: the learning rate of that update divided by the initial one (a schedule's progress)
        :return: the new beta
        """
        if not math.isfinite(kl):
            warnings.warn(f"KL controller received a non-finite KL ({kl}); beta left at {self.kl_coef}")
            return self.kl_coef
        proposal = self._proposal(float(kl))
        if proposal < self.kl_coef and lr_fraction < self.kl_hold_lr_fraction:
            self.n_held += 1
            return self.kl_coef
        clipped = min(max(proposal, self.kl_coef_min), self.kl_coef_max)
        if clipped != proposal:
            self.n_bound_hits += 1
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"KL coefficient beta hit its bound ({proposal:.3g} clipped to {clipped:.3g}, "
                    f"bounds [{self.kl_coef_min:.3g}, {self.kl_coef_max:.3g}]); "
                    "the KL target may be unreachable with these settings"
                )
        self.kl_coef = clipped
        return self.kl_coef

    def state(self) -> dict[str, Any]:
        """:return: the state that defines the controller (for logging and tests)"""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class AdaptiveKLController(KLController):
    """
    The PPO paper's rule (Schulman et al. 2017, section 4), applied once per update:
    d < d_targ / tolerance -> beta / factor; d > d_targ * tolerance -> beta * factor.

    Its general form has explicit thresholds and separate factors (the PPO-penalty tutorials' KL_min / KL_max):
    d < kl_min -> beta * factor_down; d > kl_max -> beta * factor_up; e.g. RLlib's ``kl_min=d_targ/2``,
    ``kl_max=2*d_targ``, ``factor_up=1.5``, ``factor_down=0.5``. Each one left at None is the paper's rule with
    ``tolerance`` and ``factor`` (the same operations, so the same betas bit for bit).

    :param tolerance: the paper's 1.5 (> 1)
    :param factor: the paper's 2 (> 1)
    :param kl_min: lower threshold on d (> 0, <= d_targ); None: d_targ / tolerance
    :param kl_max: upper threshold on d (>= d_targ, > kl_min); None: d_targ * tolerance
    :param factor_up: beta's multiplier above ``kl_max`` (> 1); None: ``factor``
    :param factor_down: beta's multiplier below ``kl_min`` (in (0, 1)); None: division by ``factor``
    """

    name = "adaptive"
    #: the explicit thresholds and factors (class defaults: controllers saved before they existed read None)
    kl_min: float | None = None
    kl_max: float | None = None
    factor_up: float | None = None
    factor_down: float | None = None

    def __init__(
        self,
        kl_coef: float,
        kl_target: float,
        tolerance: float = 1.5,
        factor: float = 2.0,
        kl_min: float | None = None,
        kl_max: float | None = None,
        factor_up: float | None = None,
        factor_down: float | None = None,
        **bounds: float,
    ) -> None:
        super().__init__(kl_coef, kl_target, **bounds)
        check_float("kl_tolerance", tolerance, low=1.0, low_open=True)
        check_float("kl_factor", factor, low=1.0, low_open=True)
        check_float("kl_min", kl_min, low=0.0, low_open=True, allow_none=True)
        check_float("kl_max", kl_max, low=0.0, low_open=True, allow_none=True)
        check_float("kl_factor_up", factor_up, low=1.0, low_open=True, allow_none=True)
        check_float("kl_factor_down", factor_down, low=0.0, high=1.0, low_open=True, high_open=True, allow_none=True)
        self.tolerance = float(tolerance)
        self.factor = float(factor)
        self.kl_min = None if kl_min is None else float(kl_min)
        self.kl_max = None if kl_max is None else float(kl_max)
        self.factor_up = None if factor_up is None else float(factor_up)
        self.factor_down = None if factor_down is None else float(factor_down)
        low, high = self.thresholds()
        if not low <= self.kl_target <= high or low >= high:
            raise ValueError(
                f"kl_min and kl_max must satisfy kl_min <= kl_target <= kl_max and kl_min < kl_max, got kl_min={low}, "
                f"kl_target={self.kl_target}, kl_max={high} (None: kl_target / kl_tolerance and kl_target * kl_tolerance)"
            )

    def thresholds(self) -> tuple[float, float]:
        """:return: (lower, upper) thresholds on d"""
        low = self.kl_target / self.tolerance if self.kl_min is None else self.kl_min
        high = self.kl_target * self.tolerance if self.kl_max is None else self.kl_max
        return low, high

    def _proposal(self, kl: float) -> float:
        low, high = self.thresholds()
        if kl < low:
            return self.kl_coef / self.factor if self.factor_down is None else self.kl_coef * self.factor_down
        if kl > high:
            return self.kl_coef * (self.factor if self.factor_up is None else self.factor_up)
        return self.kl_coef


class FixedKLController(KLController):
    """Constant beta (the PPO paper's "fixed KL penalty" rows)."""

    name = "fixed"

    def _proposal(self, kl: float) -> float:
        return self.kl_coef


class ProportionalKLController(KLController):
    """
    Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", section 2.2), the
    controller of RLHF: e = clip(d / d_targ - 1, -0.2, 0.2); beta <- beta * (1 + gain * e).
    (Ziegler scales the gain by the number of steps per update; here it is applied once per update.)

    :param gain: K_beta (> 0), 0.1 in the paper
    """

    name = "proportional"

    def __init__(self, kl_coef: float, kl_target: float, gain: float = 0.1, **bounds: float) -> None:
        super().__init__(kl_coef, kl_target, **bounds)
        check_float("kl_gain", gain, low=0.0, low_open=True)
        self.gain = float(gain)

    def _proposal(self, kl: float) -> float:
        error = min(max(kl / self.kl_target - 1.0, -0.2), 0.2)
        return self.kl_coef * (1.0 + self.gain * error)


def make_kl_controller(
    kl_controller: KLControllerName,
    kl_coef: float,
    kl_target: float,
    kl_tolerance: float = 1.5,
    kl_factor: float = 2.0,
    kl_gain: float = 0.1,
    kl_coef_min: float = 1e-6,
    kl_coef_max: float = 1e6,
    kl_hold_lr_fraction: float = 0.0,
    kl_min: float | None = None,
    kl_max: float | None = None,
    kl_factor_up: float | None = None,
    kl_factor_down: float | None = None,
) -> KLController:
    """
    Build the controller named by ``kl_controller`` (one of ``KL_CONTROLLERS``), validating every argument.

    :return: the controller
    """
    check_choice("kl_controller", kl_controller, KL_CONTROLLERS)
    common = dict(kl_coef_min=kl_coef_min, kl_coef_max=kl_coef_max, kl_hold_lr_fraction=kl_hold_lr_fraction)
    if kl_controller == "adaptive":
        return AdaptiveKLController(
            kl_coef,
            kl_target,
            tolerance=kl_tolerance,
            factor=kl_factor,
            kl_min=kl_min,
            kl_max=kl_max,
            factor_up=kl_factor_up,
            factor_down=kl_factor_down,
            **common,
        )
    if kl_controller == "fixed":
        return FixedKLController(kl_coef, kl_target, **common)
    return ProportionalKLController(kl_coef, kl_target, gain=kl_gain, **common)
