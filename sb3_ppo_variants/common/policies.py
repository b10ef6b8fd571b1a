"""SB3's actor-critic policies with one option SB3 lacks: a fixed (not learned) Gaussian standard deviation.

``policy_kwargs=dict(log_std_init=math.log(std), learn_std=False)`` keeps the diagonal Gaussian's standard deviation at
``exp(log_std_init)`` for the whole training (e.g. the tutorials' fixed variance 0.5: ``log_std_init=0.5 * log(0.5)``).
``log_std`` is then a buffer instead of a parameter: it is saved and loaded with the policy's ``state_dict``, no
optimizer sees it (SB3's Adam, TRPO's conjugate gradient and line search, the fast path's flat Adam) and nothing moves it.
With ``learn_std=True`` (the default) the policies are SB3's, operation for operation.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule

from sb3_ppo_variants.common.validation import check_bool


class StdActorCriticPolicy(ActorCriticPolicy):
    """
    SB3's ``ActorCriticPolicy`` (the ``MlpPolicy`` of the four algorithms) with a ``learn_std`` option.

    :param args: ``ActorCriticPolicy``'s arguments
    :param learn_std: learn the Gaussian's (state-independent) log standard deviation, as SB3 does (default); ``False``
        keeps it at ``log_std_init``. Only for the diagonal Gaussian: a ``Box`` action space without gSDE.
    :param kwargs: ``ActorCriticPolicy``'s keyword arguments
    """

    learn_std: bool = True

    def __init__(self, *args: Any, learn_std: bool = True, **kwargs: Any) -> None:
        check_bool("policy_kwargs['learn_std']", learn_std)
        self.learn_std = bool(learn_std)
        super().__init__(*args, **kwargs)
        if not self.learn_std and not isinstance(self.action_dist, DiagGaussianDistribution):
            kind = "gSDE" if self.use_sde else f"a {type(self.action_space).__name__} action space"
            raise ValueError(
                "policy_kwargs['learn_std']=False (a fixed standard deviation) needs the diagonal Gaussian: a Box "
                f"action space with use_sde=False; got {kind}. Allowed here: learn_std=True"
            )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        if not self.learn_std and isinstance(self.action_dist, DiagGaussianDistribution):
            # the same initial value, as a buffer (saved with the state_dict, seen by no optimizer)
            log_std = self.log_std.detach().clone()
            del self.log_std
            self.register_buffer("log_std", log_std)
            # SB3's optimizer, over the parameters without log_std
            self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "learn_std": self.learn_std}


class StdActorCriticCnnPolicy(StdActorCriticPolicy, ActorCriticCnnPolicy):
    """SB3's ``ActorCriticCnnPolicy`` (``CnnPolicy``) with the ``learn_std`` option of ``StdActorCriticPolicy``."""


class StdMultiInputActorCriticPolicy(StdActorCriticPolicy, MultiInputActorCriticPolicy):
    """SB3's ``MultiInputActorCriticPolicy`` (``MultiInputPolicy``) with the ``learn_std`` option."""
