"""The fast path: SB3's arithmetic without SB3's per-call overhead.

On a CPU, most of an SB3 on-policy algorithm's time with small networks is not arithmetic: it is building
``torch.distributions`` objects (with argument validation) at every rollout step, the generic
``evaluate_actions``, one Adam update per parameter tensor, ``clip_grad_norm_`` and ``zero_grad`` bookkeeping and
the buffer's per-minibatch NumPy -> torch copies. The fast path removes that overhead and keeps **the same
floating-point operations in the same order and the same random draws**, so results are bit-identical
(``torch.equal``) to the standard code:

- ``PolicyKernel``: the forward passes of SB3's ``ActorCriticPolicy`` (``forward``, ``get_distribution(...)
  .get_actions()``, ``evaluate_actions``) with the distribution maths written out: the same tensor operations
  ``torch.distributions.Normal`` / ``Categorical`` / ``Bernoulli`` perform, and the same ``normal_`` /
  ``multinomial`` / ``bernoulli`` draws, without the objects.
- ``FastUpdate``: the optimisation step of SB3 PPO's minibatch loop: the rollout buffer converted to tensors once
  per update and minibatches taken with ``index_select`` (with SB3's own permutation draw), gradients set to
  ``None`` instead of ``zero_grad()``, the clipping factor of ``clip_grad_norm_`` applied to one flat gradient,
  and the parameters and Adam moments stored as views of one flat buffer, so that Adam's (element-wise)
  single-tensor update runs once per step instead of once per parameter tensor.

What it covers (``fast_path_fallback`` says why it does not apply): SB3's ``ActorCriticPolicy`` (``MlpPolicy``) with
its ``FlattenExtractor`` and ``MlpExtractor`` on a (non-image) ``Box`` observation space, Gaussian (without gSDE),
categorical, multi-categorical and Bernoulli action distributions, on the CPU; for the update, SB3's default
``th.optim.Adam`` (one parameter group, no weight decay, AMSGrad, maximize, fused, foreach or capturable options).
Anything else runs SB3's code (``fast=False`` forces that everywhere).

Semantics kept: ``p.grad`` after ``train()`` holds the last step's clipped gradient (as a view of the flat
gradient), the optimizer's ``state_dict`` has SB3's per-parameter entries (views of the flat moments; each
parameter's ``step`` is brought up to date at the end of ``train()``), and a model saved with the fast path loads into
SB3's own classes and back. One difference: where ``torch.distributions`` validates its arguments during training,
the fast path does not (the numerical guard skips a step whose loss is not finite instead); during collection
non-finite distribution parameters raise the same ``ValueError`` as ``torch.distributions``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.distributions import Distribution as SB3Distribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.vec_env import VecEnv
from torch.distributions import Bernoulli, Categorical, Distribution, Normal
from torch.nn import functional as F
from torch.optim.adam import adam

from sb3_ppo_variants.common.buffers import ensure_flattened, iter_minibatches
from sb3_ppo_variants.common.guards import gradient_norm
from sb3_ppo_variants.common.truncation import TruncationAsTermination

#: the ActorCriticPolicy methods whose computation the kernel reproduces: a subclass overriding one runs SB3's code
_KERNEL_METHODS = (
    "forward",
    "evaluate_actions",
    "get_distribution",
    "predict_values",
    "extract_features",
    "_get_action_dist_from_latent",
)
_DISTRIBUTIONS = (DiagGaussianDistribution, CategoricalDistribution, MultiCategoricalDistribution, BernoulliDistribution)
# Normal.log_prob's constant and Normal.entropy's, computed as torch.distributions computes them
#: arguments of torch.optim.adam.adam that older PyTorch releases do not have
_ADAM_EXTRA = {"decoupled_weight_decay": False} if "decoupled_weight_decay" in inspect.signature(adam).parameters else {}
#: FlatAdam's alignment of each parameter in its flat buffer, in float32 elements (64 bytes)
_ALIGNMENT = 16
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
#: as torch rounds a Python float operand of a float32 tensor operation (NumPy 2 does the same; explicit here)
_LOG_SQRT_2PI_32 = np.float32(_LOG_SQRT_2PI)
_GAUSSIAN_ENTROPY = 0.5 + 0.5 * math.log(2 * math.pi)
#: clip_grad_norm_'s 1e-6 as a float32 tensor operation rounds it
_ONE_E_MINUS_6_32 = np.float32(1e-6)


def kernel_fallback(policy: BasePolicy) -> str | None:
    """
    :param policy: a policy
    :return: why ``PolicyKernel`` cannot reproduce the policy's computation (None: it can)
    """
    if not isinstance(policy, ActorCriticPolicy):
        return f"the policy is a {type(policy).__name__}, not SB3's ActorCriticPolicy"
    overridden = [name for name in _KERNEL_METHODS if getattr(type(policy), name) is not getattr(ActorCriticPolicy, name)]
    if overridden:
        return f"the policy class {type(policy).__name__} overrides {', '.join(overridden)}"
    if type(policy.action_dist) not in _DISTRIBUTIONS:
        return f"the action distribution is {type(policy.action_dist).__name__} (gSDE or custom)"
    if policy.squash_output:
        return "the policy squashes its actions"
    if not isinstance(policy.observation_space, spaces.Box) or (
        policy.normalize_images and is_image_space(policy.observation_space)
    ):
        return f"the observation space is {type(policy.observation_space).__name__} (the kernel takes non-image Box spaces)"
    extractors = {policy.features_extractor, policy.pi_features_extractor, policy.vf_features_extractor}
    if any(type(extractor) is not FlattenExtractor for extractor in extractors):
        return "the features extractor is not SB3's FlattenExtractor"
    if type(policy.mlp_extractor) is not MlpExtractor or not (
        type(policy.action_net) is type(policy.value_net) is th.nn.Linear
    ):
        return "the networks are not SB3's MlpExtractor with linear action and value layers"
    if any(module._forward_hooks or module._forward_pre_hooks for module in policy.modules()):
        return "a module of the policy has forward hooks"
    if policy.device.type != "cpu":
        return f"the policy is on {policy.device}, the fast path is written for the CPU"
    return None


def _module_tree(policy: BasePolicy) -> tuple[list[th.nn.Module], tuple[Any, ...]]:
    """
    :return: the modules of the policy (each once, as ``modules()`` gives them) and a signature of what
        ``kernel_fallback`` checks that can change on the same policy object: the identities of the modules, of their
        parameters and of the distribution and observation space, whether a module has forward hooks, the flags
    """
    modules = list(policy.modules())
    signature: list[Any] = [type(policy), id(policy.action_dist), id(policy.observation_space), policy.squash_output]
    signature.append(getattr(policy, "normalize_images", None))
    for module in modules:
        signature.append(id(module))
        signature.append(bool(module._forward_hooks or module._forward_pre_hooks))
        signature.extend(id(parameter) for parameter in module._parameters.values())
    return modules, tuple(signature)


def _categorical(normalised_logits: th.Tensor) -> Categorical:
    """``Categorical(logits=...)`` around logits already normalised (as its ``__init__`` leaves them), unvalidated."""
    distribution = Categorical.__new__(Categorical)
    distribution.logits = normalised_logits
    distribution._param = normalised_logits
    distribution._num_events = normalised_logits.size()[-1]
    Distribution.__init__(distribution, normalised_logits.size()[:-1], validate_args=False)
    return distribution


def _check_finite(parameters: np.ndarray, name: str) -> None:
    # torch.distributions' argument validation, which SB3's rollout relies on to refuse NaN observations (NumPy: cheaper
    # than two torch operations on a few numbers)
    if not np.isfinite(parameters).all():
        raise ValueError(f"Expected parameter {name} to satisfy the constraint Real(), but found invalid values")


class PolicyKernel:
    """
    SB3 ``ActorCriticPolicy``'s forward passes with the distribution maths written out: the operations of
    ``torch.distributions`` (and of SB3's ``Distribution`` wrappers) in the same order, the same random draws.
    Build it with ``PolicyKernel.of(policy)`` (None where ``kernel_fallback`` gives a reason) for one rollout or one
    update: it holds the policy's parameter objects (it sees their current values, not a replaced module).
    """

    def __init__(self, policy: ActorCriticPolicy) -> None:
        self.policy = policy
        self.observation_space = policy.observation_space  # alive while its id is in the signature
        self._modules, self.signature = _module_tree(policy)
        #: every module's train/eval switch is nn.Module's own (set_training_mode may set the flags directly)
        self._plain_modes = type(policy).set_training_mode is BasePolicy.set_training_mode and all(
            type(module).train is th.nn.Module.train for module in self._modules
        )
        self.action_dist = policy.action_dist
        # the distribution family, tested once (isinstance on SB3's abstract classes costs a microsecond per call)
        self.gaussian = isinstance(policy.action_dist, DiagGaussianDistribution)
        self.bernoulli = isinstance(policy.action_dist, BernoulliDistribution)
        self.categorical = isinstance(policy.action_dist, CategoricalDistribution)
        self.action_shape: tuple[int, ...] = policy.action_space.shape or ()
        if isinstance(policy.action_dist, MultiCategoricalDistribution):
            self.action_dims = list(policy.action_dist.action_dims)
        self._actor = self._layers(policy.mlp_extractor.policy_net)
        self._critic = self._layers(policy.mlp_extractor.value_net)
        self._action_net: tuple[th.Tensor, th.Tensor] = (policy.action_net.weight, policy.action_net.bias)  # type: ignore[assignment]
        self._value_net: tuple[th.Tensor, th.Tensor] = (policy.value_net.weight, policy.value_net.bias)
        self._log_std: th.Tensor | None = getattr(policy, "log_std", None)
        #: the forward passes do not depend on the modules' train/eval mode (linear layers and tanh / ReLU only)
        layers = self._actor + self._critic
        self.mode_independent = all(type(layer) is tuple or layer in (th.tanh, th.relu) for layer in layers)
        self._std_cache: tuple[tuple[Any, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._noise_buffer: th.Tensor | None = None

    @staticmethod
    def of(policy: BasePolicy) -> PolicyKernel | None:
        """:return: the kernel of the policy, None when it does not apply (see ``kernel_fallback``)"""
        if kernel_fallback(policy) is not None:
            return None
        assert isinstance(policy, ActorCriticPolicy)
        return PolicyKernel(policy)

    def current(self, policy: BasePolicy) -> bool:
        """
        :return: whether this kernel still computes what ``policy`` computes: the same policy object, with the same
            modules, parameters, distribution and hooks as when the kernel was built (``kernel_fallback`` found no reason
            then), still on the CPU; a kernel kept between rollouts and updates is checked with this
        """
        return policy is self.policy and _module_tree(policy)[1] == self.signature and self._action_net[0].device.type == "cpu"

    def forget(self) -> None:
        """
        Drop what was computed from the parameters' values (the rollout's standard deviation): a kernel kept for the
        next rollout or update must not trust it (FlatAdam's in-place steps do not move a parameter's ``_version``)
        """
        self._std_cache = None

    def set_training_mode(self, mode: bool) -> None:
        """``policy.set_training_mode(mode)``: ``nn.Module.train(mode)`` sets ``training`` on every module of the tree"""
        if not self._plain_modes:
            self.policy.set_training_mode(mode)
            return
        for module in self._modules:
            object.__setattr__(module, "training", mode)

    # ----- networks --------------------------------------------------------------------------------

    @staticmethod
    def _layers(network: th.nn.Module) -> list[Any]:
        # an nn.Sequential of nn.Linear layers (as weight and bias) and activations: the function nn.Tanh / nn.ReLU call,
        # any other activation module as it is
        layers: list[Any] = []
        for layer in network:  # type: ignore[attr-defined]
            if type(layer) is th.nn.Linear:
                layers.append((layer.weight, layer.bias))
            elif type(layer) is th.nn.Tanh or (type(layer) is th.nn.ReLU and not layer.inplace):
                layers.append(th.tanh if type(layer) is th.nn.Tanh else th.relu)
            else:
                layers.append(layer)
        return layers

    @staticmethod
    def mlp(layers: list[Any], x: th.Tensor) -> th.Tensor:
        """``network(x)``: ``F.linear`` (what ``nn.Linear`` calls) for the layers, the activation modules as they are"""
        for layer in layers:
            x = F.linear(x, *layer) if type(layer) is tuple else layer(x)
        return x

    @staticmethod
    def observation(obs: np.ndarray) -> th.Tensor:
        """``th.as_tensor(obs, device="cpu")`` of a VecEnv's observations (the kernel is for the CPU): shares the array"""
        return th.from_numpy(obs) if type(obs) is np.ndarray else th.as_tensor(obs)

    @staticmethod
    def features(obs: th.Tensor) -> th.Tensor:
        """``preprocess_obs`` of a non-image Box space, then ``FlattenExtractor``."""
        return obs.float().flatten(1)

    def actor_output(self, features: th.Tensor) -> th.Tensor:
        """The action network's output: means (Gaussian) or logits."""
        return F.linear(self.mlp(self._actor, features), *self._action_net)

    def value(self, features: th.Tensor) -> th.Tensor:
        """``predict_values``"""
        return F.linear(self.mlp(self._critic, features), *self._value_net)

    # ----- distributions ---------------------------------------------------------------------------

    def _gaussian_std(self, mean: th.Tensor) -> th.Tensor:
        # DiagGaussianDistribution.proba_distribution
        assert self._log_std is not None
        return th.ones_like(mean) * self._log_std.exp()

    def _rollout_std(self, mean: th.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        Without gradient (collection), the standard deviation and the two terms of ``Normal.log_prob`` that depend on it
        alone, ``2 * var`` and ``log(std)``, as NumPy arrays: the same for every step of a rollout, computed once (again
        when ``log_std`` changes) with the operations ``Normal`` performs at each step.
        """
        assert self._log_std is not None
        key = (self._log_std.data_ptr(), self._log_std._version, mean.shape)
        if self._std_cache is None or self._std_cache[0] != key:
            std = self._gaussian_std(mean)
            var = std**2
            self._std_cache = (key, (std.numpy(), (2 * var).numpy(), std.log().numpy()))
        return self._std_cache[1]

    def _noise(self, mean: th.Tensor) -> th.Tensor:
        """
        ``torch.empty(mean.shape).normal_()``, the draw of ``Normal.rsample``, into a buffer kept for the next steps (a
        normal tensor, so that ``normal_`` may write it in inference mode or out of it); read it before the next call.
        """
        noise = self._noise_buffer
        if noise is None or noise.shape != mean.shape or noise.dtype != mean.dtype:
            with th.inference_mode(False):
                noise = self._noise_buffer = th.empty(mean.shape, dtype=mean.dtype, device=mean.device)
        return noise.normal_()

    @staticmethod
    def _normalised_logits(logits: th.Tensor) -> th.Tensor:
        # Categorical(logits=...)
        return logits - logits.logsumexp(dim=-1, keepdim=True)

    def _categoricals(self, output: th.Tensor) -> list[th.Tensor]:
        if self.categorical:
            return [self._normalised_logits(output)]
        return [self._normalised_logits(split) for split in th.split(output, self.action_dims, dim=1)]

    @staticmethod
    def _categorical_sample(logits: th.Tensor) -> th.Tensor:
        # Categorical.sample() with its probs (softmax of the normalised logits)
        probs_2d = F.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
        return th.multinomial(probs_2d, 1, True).T.reshape(logits.shape[:-1])

    @staticmethod
    def _categorical_log_prob(logits: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return logits.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def _categorical_entropy(logits: th.Tensor) -> th.Tensor:
        clamped = th.clamp(logits, min=th.finfo(logits.dtype).min)
        p_log_p = clamped * F.softmax(logits, dim=-1)
        return -p_log_p.sum(-1)

    def sample(self, output: th.Tensor, check: bool = True) -> tuple[th.Tensor, Any]:
        """
        Without gradient (collection, prediction).

        The Gaussian's element-wise arithmetic (``loc + eps * scale`` here, ``Normal.log_prob``'s terms in ``log_prob``)
        runs in NumPy on the same float32 numbers: an IEEE-754 sum, difference, product or quotient is correctly rounded
        in either library, so the results are the same bits, at a fraction of a torch call's overhead on a few numbers.
        The noise is torch's own ``normal_`` draw and the sum over the action's dimensions is torch's reduction.

        :param output: the action network's output
        :param check: raise torch.distributions' ValueError on non-finite distribution parameters
        :return: actions sampled as ``distribution.get_actions()`` samples them, and the distribution's parameters
        """
        if self.gaussian:
            mean = output.numpy()
            if check:
                _check_finite(mean, "loc")
            std, two_var, log_scale = self._rollout_std(output)
            return th.from_numpy(mean + self._noise(output).numpy() * std), (std, two_var, log_scale)
        if check:
            _check_finite(output.numpy(), "logits")
        if self.bernoulli:
            return th.bernoulli(th.sigmoid(output)), None
        logits = self._categoricals(output)
        samples = [self._categorical_sample(split) for split in logits]
        actions = samples[0] if self.categorical else th.stack(samples, dim=1)
        return actions, logits

    def log_prob(self, output: th.Tensor, parameters: Any, actions: th.Tensor) -> th.Tensor:
        """
        :param output: the action network's output
        :param parameters: the distribution's parameters as ``sample`` / ``evaluate`` return them
        :param actions: actions as SB3's ``Distribution.log_prob`` takes them
        :return: ``distribution.log_prob(actions)``
        """
        if self.gaussian:
            std, two_var, log_scale = parameters
            if two_var is None:
                # with gradient: Normal.log_prob's operations in its order (the order of the backward pass's sums)
                var = std**2
                log_scale = std.log()
                log_prob = -((actions - output) ** 2) / (2 * var) - log_scale - _LOG_SQRT_2PI
                return log_prob.sum(dim=1)
            # a rollout's (see sample): the same operations in NumPy, the sum in torch
            difference = actions.numpy() - output.numpy()
            terms = -(difference * difference) / two_var - log_scale - _LOG_SQRT_2PI_32
            return th.from_numpy(terms).sum(dim=1)
        if self.bernoulli:
            return (-F.binary_cross_entropy_with_logits(output, actions, reduction="none")).sum(dim=1)
        if self.categorical:
            return self._categorical_log_prob(parameters[0], actions)
        per_dim = [
            self._categorical_log_prob(logits, action)
            for logits, action in zip(parameters, th.unbind(actions, dim=1), strict=True)
        ]
        return th.stack(per_dim, dim=1).sum(dim=1)

    def entropy(self, output: th.Tensor, parameters: Any) -> th.Tensor:
        """:return: ``distribution.entropy()``"""
        if self.gaussian:
            return (_GAUSSIAN_ENTROPY + th.log(parameters[0])).sum(dim=1)
        if self.bernoulli:
            return F.binary_cross_entropy_with_logits(output, th.sigmoid(output), reduction="none").sum(dim=1)
        if self.categorical:
            return self._categorical_entropy(parameters[0])
        return th.stack([self._categorical_entropy(logits) for logits in parameters], dim=1).sum(dim=1)

    def _parameters(self, output: th.Tensor) -> Any:
        if self.gaussian:
            return self._gaussian_std(output), None, None
        if self.bernoulli:
            return None
        return self._categoricals(output)

    # ----- the policy's methods --------------------------------------------------------------------

    def forward(self, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``policy(obs)`` (SB3's rollout call): actions, values, log-probabilities"""
        features = self.features(obs)
        # MlpExtractor.forward: the actor's latent, then the critic's
        latent_pi = self.mlp(self._actor, features)
        latent_vf = self.mlp(self._critic, features)
        values = F.linear(latent_vf, *self._value_net)
        output = F.linear(latent_pi, *self._action_net)
        actions, parameters = self.sample(output)
        log_prob = self.log_prob(output, parameters, actions)
        return actions.reshape((-1, *self.action_shape)), values, log_prob

    def get_distribution(self, obs: th.Tensor) -> SB3Distribution:
        """``policy.get_distribution(obs)``: the policy's ``action_dist``, its distribution set (as SB3 leaves it)"""
        output = self.actor_output(self.features(obs))
        self.action_dist.distribution = self.torch_distribution(output, self._parameters(output))  # type: ignore[attr-defined]
        return self.action_dist

    def get_actions(self, obs: th.Tensor) -> th.Tensor:
        """``policy.get_distribution(obs).get_actions()``"""
        return self.sample(self.actor_output(self.features(obs)))[0]

    def torch_distribution(self, output: th.Tensor, parameters: Any) -> Any:
        """
        :return: the ``torch.distributions`` object(s) SB3 would leave in ``policy.action_dist.distribution``, built
            around the tensors already computed (no operation added, no argument validation)
        """
        if self.gaussian:
            return Normal(output, parameters[0], validate_args=False)
        if self.bernoulli:
            return Bernoulli(logits=output, validate_args=False)
        categoricals = [_categorical(logits) for logits in parameters]
        return categoricals[0] if self.categorical else categoricals

    def evaluate_actions(
        self, obs: th.Tensor, actions: th.Tensor, entropy_gradient: bool = True
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        ``policy.evaluate_actions(obs, actions)``: values, log-probabilities, entropy (with gradient); like SB3's, it
        leaves the minibatch's distribution in ``policy.action_dist`` (PPOKL's penalty reads it)

        :param entropy_gradient: False: the entropy without gradient, for a loss that multiplies it by 0 (SB3's default
            ``ent_coef=0.0``). Its branch of the backward pass would only add exact zeros to the gradients, so leaving
            it out changes no bit of them; the entropy's value is the same.
        """
        features = self.features(obs)
        latent_pi = self.mlp(self._actor, features)
        latent_vf = self.mlp(self._critic, features)
        output = F.linear(latent_pi, *self._action_net)
        parameters = self._parameters(output)
        log_prob = self.log_prob(output, parameters, actions)
        values = F.linear(latent_vf, *self._value_net)
        if entropy_gradient:
            entropy = self.entropy(output, parameters)
        else:
            with th.no_grad():
                entropy = self.entropy(output, parameters)
        self.action_dist.distribution = self.torch_distribution(output, parameters)  # type: ignore[attr-defined]
        return values, log_prob, entropy


# ===== the update ==================================================================================


def flat_adam_fallback(optimizer: th.optim.Optimizer) -> str | None:
    """
    :param optimizer: the policy's optimizer
    :return: why ``FlatAdam`` cannot reproduce its step (None: it can)
    """
    if type(optimizer) is not th.optim.Adam:
        return f"the optimizer is {type(optimizer).__name__}, not th.optim.Adam"
    if len(optimizer.param_groups) != 1:
        return "the optimizer has several parameter groups"
    group = optimizer.param_groups[0]
    options = {
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": False,
    }
    changed = [name for name, default in options.items() if group.get(name, default) not in (default, False)]
    if group.get("weight_decay", 0) != 0:
        changed.append("weight_decay")
    if changed:
        return f"the Adam options {', '.join(changed)} are set"
    if isinstance(group["lr"], th.Tensor):
        return "the learning rate is a tensor"
    params = group["params"]
    if any(p.dtype != th.float32 or p.device.type != "cpu" or p.is_sparse for p in params):
        return "the parameters are not dense float32 CPU tensors"
    return None


class FlatAdam:
    """
    SB3's ``th.optim.Adam`` step, run once on one flat buffer instead of once per parameter tensor.

    The parameters (``p.data``) and the Adam moments in the optimizer's state are views of three flat tensors
    owned here; a second Adam over the one flat tensor does the update. Adam's single-tensor update is
    element-wise, so the result is the same bit for bit. The views are checked at each ``begin`` and rebuilt
    when someone replaced them (``optimizer.load_state_dict``, ``policy.to(...)``); each parameter's ``step``
    counter is written back by ``end``.

    :param optimizer: the policy's optimizer (``flat_adam_fallback(optimizer)`` must be None)
    :param params: the parameters it steps, all of the optimizer's by default (TRPO's critic steps only the critic's:
        Adam skips a parameter without gradient, a flat update would not)
    """

    def __init__(self, optimizer: th.optim.Optimizer, params: list[th.nn.Parameter] | None = None) -> None:
        self.optimizer = optimizer
        self.params: list[th.nn.Parameter] = list(optimizer.param_groups[0]["params"]) if params is None else params
        # each parameter starts on a 64-byte boundary, as a tensor of its own does: BLAS kernels sum in an order that can
        # depend on the alignment of their operands (a weight at an 8-byte offset changes the last bits of a matmul)
        self.sizes = [p.numel() for p in self.params]
        padded = [-(-size // _ALIGNMENT) * _ALIGNMENT for size in self.sizes]
        self.offsets = [sum(padded[:i]) for i in range(len(padded))]
        self.numel = sum(padded)
        self._padding = [th.zeros(pad - size) if pad > size else None for pad, size in zip(padded, self.sizes, strict=True)]
        #: the positions of the parameters' values in a flat tensor (the padding left out), in order
        self.unpadded = th.cat(
            [th.arange(offset, offset + size) for offset, size in zip(self.offsets, self.sizes, strict=True)]
        )
        self._pointers: list[int] = []
        self._states: list[dict[str, th.Tensor]] = []
        self.flat = th.empty(0)
        self._moments: tuple[th.Tensor, th.Tensor, th.Tensor] | None = None  # Adam's step, exp_avg, exp_avg_sq

    def all_params(self) -> list[th.nn.Parameter]:
        """:return: every parameter of the optimizer"""
        return list(self.optimizer.param_groups[0]["params"])

    def concatenate(self, tensors: list[th.Tensor]) -> th.Tensor:
        """:return: one flat tensor with the tensors (shaped as the parameters) at their aligned offsets, zeros between"""
        pieces: list[th.Tensor] = []
        for tensor, padding in zip(tensors, self._padding, strict=True):
            pieces.append(tensor.reshape(-1))
            if padding is not None:
                pieces.append(padding)
        return th.cat(pieces)

    def views(self, flat: th.Tensor) -> list[th.Tensor]:
        """:return: the views of a flat tensor shaped as the parameters"""
        return [
            flat[offset : offset + size].view_as(p)
            for p, offset, size in zip(self.params, self.offsets, self.sizes, strict=True)
        ]

    def _intact(self) -> bool:
        # the parameters still live in the flat buffer, the optimizer's state is still ours, and no step was taken
        # behind our back (a user's own optimizer.step() moves the per-parameter counters)
        state = self.optimizer.state
        if self._moments is None or [p.data_ptr() for p in self.params] != self._pointers:
            return False
        step = float(self._moments[0])
        return all(
            state.get(p) is own and float(own["step"]) == step for p, own in zip(self.params, self._states, strict=True)
        )

    def _build(self) -> None:
        state = self.optimizer.state
        with th.no_grad():
            self.flat = self.concatenate([p.detach() for p in self.params])
            for p, view in zip(self.params, self.views(self.flat), strict=True):
                p.data = view
            if all(len(state.get(p, {})) == 0 for p in self.params):
                # as Adam initialises a parameter's state at its first step
                exp_avg, exp_avg_sq, step = th.zeros_like(self.flat), th.zeros_like(self.flat), th.tensor(0.0)
            else:
                steps = {float(state[p]["step"]) for p in self.params}
                assert len(steps) == 1, "FlatAdam needs the same Adam step count for every parameter"
                exp_avg = self.concatenate([state[p]["exp_avg"] for p in self.params])
                exp_avg_sq = self.concatenate([state[p]["exp_avg_sq"] for p in self.params])
                step = state[self.params[0]]["step"].detach().clone()
        self._states = []
        for p, m, v in zip(self.params, self.views(exp_avg), self.views(exp_avg_sq), strict=True):
            own = {"step": step.clone(), "exp_avg": m, "exp_avg_sq": v}
            state[p] = own
            self._states.append(own)
        self._pointers = [p.data_ptr() for p in self.params]
        self._moments = (step, exp_avg, exp_avg_sq)

    def begin(self) -> None:
        """Before an update: (re)build the flat buffers if they are not the optimizer's any more."""
        if not self._intact():
            self._build()

    def step(self, flat_grad: th.Tensor) -> None:
        """
        Adam's step with the flat gradient (the parameters' gradients, concatenated): the function
        ``th.optim.Adam.step`` calls (``torch.optim.adam.adam``, single-tensor), with the group's current options.
        """
        assert self._moments is not None
        step, exp_avg, exp_avg_sq = self._moments
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        with th.no_grad():
            adam(
                [self.flat],
                [flat_grad],
                [exp_avg],
                [exp_avg_sq],
                [],
                [step],
                foreach=False,
                capturable=False,
                differentiable=False,
                fused=None,
                grad_scale=None,
                found_inf=None,
                has_complex=False,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
                **_ADAM_EXTRA,
            )

    def end(self) -> None:
        """After an update: each parameter's ``step`` counter in the optimizer's state equals the flat one."""
        assert self._moments is not None
        for own in self._states:
            own["step"].copy_(self._moments[0])


def _same(first: list[th.nn.Parameter], second: list[th.nn.Parameter]) -> bool:
    return len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))


class StandardUpdate:
    """The optimisation step as SB3 PPO writes it: ``zero_grad``, ``clip_grad_norm_``, ``optimizer.step``."""

    def __init__(self, policy: BasePolicy, optimizer: th.optim.Optimizer | None = None) -> None:
        """
        :param policy: the policy
        :param optimizer: the optimizer the steps use (default: the policy's; REINFORCE's value fit: its own)
        """
        self.policy = policy
        self.optimizer: th.optim.Optimizer = policy.optimizer if optimizer is None else optimizer
        self._raw: th.Tensor | None = None
        #: the fast path's forward passes (None: the policy's own)
        self.kernel: PolicyKernel | None = None

    def set_training_mode(self, mode: bool) -> None:
        """``policy.set_training_mode(mode)``"""
        self.policy.set_training_mode(mode)

    def begin(self) -> None:
        pass

    def minibatches(self, buffer: RolloutBuffer, batch_size: int) -> Iterator[tuple[np.ndarray, RolloutBufferSamples]]:
        """:return: SB3's minibatches (``buffer.get(batch_size)``) with their indices in the flattened buffer"""
        return iter_minibatches(buffer, batch_size)  # type: ignore[return-value]

    def evaluate_actions(
        self, obs: Any, actions: th.Tensor, entropy_gradient: bool = True
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        :param entropy_gradient: whether the loss needs the entropy's gradient (False: ``ent_coef`` is 0; SB3's
            ``evaluate_actions`` records it anyway)
        :return: ``policy.evaluate_actions(obs, actions)``
        """
        return self.policy.evaluate_actions(obs, actions)  # type: ignore[operator]

    def predict_values(self, obs: Any) -> th.Tensor:
        return self.policy.predict_values(obs)  # type: ignore[operator]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def gradient_norm(self) -> th.Tensor:
        """:return: the global norm of the gradients of the optimizer's parameters (read only)"""
        return gradient_norm(p for group in self.optimizer.param_groups for p in group["params"])

    def clip_grad_norm(self, max_norm: float, keep_gradient: bool = False) -> th.Tensor:
        """
        :param max_norm: the clipping threshold
        :param keep_gradient: keep the gradient before clipping for ``gradient()``
        :return: the gradient norm before clipping
        """
        if keep_gradient:
            self._raw = th.cat([p.grad.reshape(-1) for p in self.policy.parameters() if p.grad is not None])
        return th.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)

    def gradient(self) -> th.Tensor:
        """
        :return: the minibatch gradient before clipping as one flat vector (``clip_grad_norm(keep_gradient=True)``), in
            the layout ``plain`` turns into the parameters' gradients end to end
        """
        assert self._raw is not None, "clip_grad_norm(..., keep_gradient=True) keeps the gradient"
        return self._raw

    def plain(self, vector: th.Tensor) -> th.Tensor:
        """:return: a vector in the layout of ``gradient()`` as the parameters' values end to end (here: itself)"""
        return vector

    def step(self) -> None:
        self.optimizer.step()

    def end(self) -> None:
        pass


class _Rollout(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor


class FastUpdate(StandardUpdate):
    """
    The same step, bit for bit, with less overhead (see the module's docstring): a ``PolicyKernel`` for
    ``evaluate_actions``, the buffer as tensors once per update, ``FlatAdam``.
    """

    def __init__(self, policy: ActorCriticPolicy, kernel: PolicyKernel, adam: FlatAdam) -> None:
        super().__init__(policy, adam.optimizer)
        self.kernel: PolicyKernel = kernel
        self.adam = adam
        self.params = adam.params
        self.all_params = adam.all_params()
        self._grad: th.Tensor | None = None  # the flat clipped gradient of the last step
        self._data: _Rollout | None = None

    def set_training_mode(self, mode: bool) -> None:
        self.kernel.set_training_mode(mode)

    def begin(self) -> None:
        self.adam.begin()
        self._grad = None

    def minibatches(self, buffer: RolloutBuffer, batch_size: int) -> Iterator[tuple[np.ndarray, RolloutBufferSamples]]:
        # SB3's buffer.get(batch_size): the same permutation draw, the same values (to_torch copies keep the dtype; the
        # policy casts observations to float32, exactly, as here)
        assert buffer.full, "the rollout buffer must be full"
        n_samples = buffer.buffer_size * buffer.n_envs
        indices = np.random.permutation(n_samples)
        ensure_flattened(buffer)
        if self._data is None:  # once per update (the buffer does not change during an update)
            self._data = _Rollout(
                th.as_tensor(buffer.observations).float(),
                th.as_tensor(buffer.actions.astype(np.float32, copy=False)),
                th.as_tensor(buffer.values.reshape(-1)),
                th.as_tensor(buffer.log_probs.reshape(-1)),
                th.as_tensor(buffer.advantages.reshape(-1)),
                th.as_tensor(buffer.returns.reshape(-1)),
            )
        data = self._data
        all_indices = th.as_tensor(indices)
        for start in range(0, n_samples, batch_size):
            batch = all_indices[start : start + batch_size]
            samples = RolloutBufferSamples(*(tensor.index_select(0, batch) for tensor in data))
            yield indices[start : start + batch_size], samples

    def evaluate_actions(
        self, obs: Any, actions: th.Tensor, entropy_gradient: bool = True
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        return self.kernel.evaluate_actions(obs, actions, entropy_gradient)

    def predict_values(self, obs: th.Tensor) -> th.Tensor:
        """``policy.predict_values(obs)`` (with gradient)"""
        return self.kernel.value(self.kernel.features(obs))

    def zero_grad(self) -> None:
        # optimizer.zero_grad() (set_to_none=True) without its bookkeeping
        for p in self.all_params:
            p.grad = None
        self._grad = None

    def _grads(self) -> list[th.Tensor]:
        grads = [p.grad for p in self.params]
        if any(grad is None for grad in grads):
            raise RuntimeError("a parameter received no gradient: the fast update needs them all (use fast=False)")
        return grads  # type: ignore[return-value]

    def gradient_norm(self) -> th.Tensor:
        """
        :return: the global norm of the gradients, which the next ``step()`` applies unclipped: the norm of the flat
            gradient the step takes (one operation; it may differ from ``StandardUpdate``'s norm of per-tensor norms in
            the last bits, and like it is not finite when a gradient is not: the callers read it for the numerical
            guard only)
        """
        self._grad = self.adam.concatenate(self._grads())
        return th.linalg.vector_norm(self._grad, 2.0)

    def clip_grad_norm(self, max_norm: float, keep_gradient: bool = False) -> th.Tensor:
        # clip_grad_norm_: the norm of each gradient (torch._foreach_norm), their norm, the clamped factor; the factor
        # multiplies the one flat gradient the Adam step takes
        grads = self._grads()
        norms = th._foreach_norm(grads, 2.0)
        total_norm = th.linalg.vector_norm(th.stack(norms), 2.0)
        # clip_coef = max_norm / (total_norm + 1e-6) (Tensor.__rtruediv__: reciprocal() * max_norm), then
        # clamp(max=1.0): the same float32 operations on the same numbers in NumPy (correctly rounded in either library),
        # without a torch call's overhead each; the product below takes it as a Python float holding that float32 value
        sum_32 = np.float32(total_norm.item()) + _ONE_E_MINUS_6_32
        clip_coef = (np.float32(1.0) / sum_32) * np.float32(max_norm)
        clip_coef_clamped = float(np.minimum(clip_coef, np.float32(1.0)))
        flat = self.adam.concatenate(grads)
        if keep_gradient:
            # the flat gradient itself (FlatAdam's layout, see plain), clipped out of place: the same values
            self._raw = flat
            self._grad = flat * clip_coef_clamped
        else:
            self._grad = flat.mul_(clip_coef_clamped)
        return total_norm

    def plain(self, vector: th.Tensor) -> th.Tensor:
        """:return: a vector in FlatAdam's layout (``gradient()``'s) without the alignment padding"""
        return vector.index_select(0, self.adam.unpadded)

    def step(self) -> None:
        assert self._grad is not None
        self.adam.step(self._grad)

    def end(self) -> None:
        self.adam.end()
        # p.grad as SB3 leaves it: the last step's clipped gradient
        if self._grad is not None:
            for p, grad in zip(self.params, self.adam.views(self._grad), strict=True):
                p.grad = grad


def add_to_buffer(
    buffer: RolloutBuffer,
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    episode_start: np.ndarray,
    value: th.Tensor,
    log_prob: th.Tensor,
) -> None:
    """``buffer.add(...)`` for SB3's own ``RolloutBuffer`` (Box observations): the same values written without the
    intermediate copies; any other buffer class gets its own ``add``."""
    if type(buffer) is not RolloutBuffer:
        buffer.add(obs, action, reward, episode_start, value, log_prob)
        return
    pos = buffer.pos
    buffer.observations[pos] = obs
    buffer.actions[pos] = action.reshape((buffer.n_envs, buffer.action_dim))
    buffer.rewards[pos] = reward
    buffer.episode_starts[pos] = episode_start
    buffer.values[pos] = value.numpy().reshape(-1)
    buffer.log_probs[pos] = log_prob.numpy()
    buffer.pos += 1
    if buffer.pos == buffer.buffer_size:
        buffer.full = True


# ===== the algorithms' side ========================================================================


class FastPathAlgorithm(OnPolicyAlgorithm):
    """
    Mixin of the package's actor-critic algorithms: the ``fast`` switch, ``fast_path_fallback()``, and SB3's
    ``collect_rollouts`` with the policy's forward pass taken by ``PolicyKernel`` (the rest of the loop is SB3's,
    statement for statement, so the buffer, callbacks, ``num_timesteps`` and the info buffer see exactly what they see
    in SB3). The update is the algorithm's: it asks ``_update_steps()`` for its optimisation step.
    """

    fast: bool
    #: time-limit truncation treated as termination: no bootstrap (the PPO family and TRPOKL take it as an argument)
    truncation_as_terminal: bool = False
    #: the flat buffers of the fast update, by optimizer (not saved: rebuilt from the parameters and the optimizer's state)
    _flat_adams: dict[int, FlatAdam] | None = None
    #: the policy's kernel (not saved: rebuilt from the policy)
    _kernel_cache: PolicyKernel | None = None

    def fast_path_fallback(self, part: str = "rollout") -> str | None:
        """
        :param part: ``"rollout"`` (the collection) or ``"update"`` (the PPO family's minibatch step)
        :return: why the standard SB3 code runs for this part of the algorithm, None when the fast path runs
        """
        if not self.fast:
            return "fast=False"
        reason = kernel_fallback(self.policy)
        if reason is None and part == "update":
            reason = flat_adam_fallback(self.policy.optimizer)
        return reason

    def _kernel(self) -> PolicyKernel | None:
        """
        :return: the policy's kernel for the next rollout or update, None when the standard code runs; kept between
            them while it is ``current`` (rebuilt, with ``kernel_fallback``'s checks, when the policy changed)
        """
        if not self.fast:
            return None
        kernel = self._kernel_cache
        if kernel is None or not kernel.current(self.policy):
            kernel = self._kernel_cache = PolicyKernel.of(self.policy)
        else:
            kernel.forget()
        return kernel

    def _update_steps(
        self, params: list[th.nn.Parameter] | None = None, optimizer: th.optim.Optimizer | None = None
    ) -> StandardUpdate:
        """
        :param params: the parameters the steps update (default: all of the optimizer's)
        :param optimizer: the optimizer (default: the policy's)
        :return: the optimisation step of the next update: ``FastUpdate`` where the fast path applies
        """
        optimizer = self.policy.optimizer if optimizer is None else optimizer
        kernel = self._kernel()
        if kernel is None or flat_adam_fallback(optimizer) is not None:
            return StandardUpdate(self.policy, optimizer)
        if self._flat_adams is None:
            self._flat_adams = {}
        flat = self._flat_adams.get(id(optimizer))
        if flat is None or flat.optimizer is not optimizer or not _same(flat.params, params or flat.all_params()):
            flat = self._flat_adams[id(optimizer)] = FlatAdam(optimizer, params)
        return FastUpdate(self.policy, kernel, flat)

    @property
    def _flat_adam(self) -> FlatAdam | None:
        """The flat buffers of the policy optimizer's fast update (None before the first)."""
        return None if self._flat_adams is None else self._flat_adams.get(id(self.policy.optimizer))

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_flat_adams", "_kernel_cache"]

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        SB3's ``collect_rollouts``; with the fast path, the policy's forward pass is ``PolicyKernel.forward``. With
        ``truncation_as_terminal`` both see the VecEnv through ``TruncationAsTermination`` (no bootstrap on time limits).
        """
        if self.truncation_as_terminal:
            env = TruncationAsTermination(env)  # type: ignore[assignment]
        kernel = self._kernel()
        if kernel is None:  # gSDE, other policies, fast=False
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        kernel.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()
        clip_actions = isinstance(self.action_space, spaces.Box)
        low, high = (self.action_space.low, self.action_space.high) if clip_actions else (None, None)  # type: ignore[attr-defined]
        discrete = isinstance(self.action_space, spaces.Discrete)

        # one context object for the loop's forward passes (entered and left at each step, never nested)
        no_grad = th.inference_mode()

        while n_steps < n_rollout_steps:
            with no_grad:
                obs_tensor = kernel.observation(self._last_obs)  # type: ignore[arg-type]
                actions_tensor, values, log_probs = kernel.forward(obs_tensor)
            actions = actions_tensor.numpy()

            # Clip the actions to avoid out of bound error as we are sampling from an unbounded Gaussian distribution
            # (ndarray.clip: what np.clip calls)
            clipped_actions = actions.clip(low, high) if clip_actions else actions  # type: ignore[arg-type]

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if discrete:
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)

            # Handle timeout by bootstrapping with value function
            # see GitHub issue #633
            for idx in dones.nonzero()[0]:
                if infos[idx].get("terminal_observation") is not None and infos[idx].get("TimeLimit.truncated", False):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with no_grad:
                        terminal_value = kernel.value(kernel.features(terminal_obs))[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value

            add_to_buffer(rollout_buffer, self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with no_grad:
            # Compute value for the last timestep
            values = kernel.value(kernel.features(kernel.observation(new_obs)))  # type: ignore[arg-type]

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True
