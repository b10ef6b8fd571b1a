# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy
# that work for REINFORCE (SB3's actor-critic policies with common/policies.py's learn_std option;
# the value head is used only by baseline="value")
from sb3_ppo_variants.common.policies import StdActorCriticCnnPolicy, StdActorCriticPolicy, StdMultiInputActorCriticPolicy

MlpPolicy = StdActorCriticPolicy
CnnPolicy = StdActorCriticCnnPolicy
MultiInputPolicy = StdMultiInputActorCriticPolicy
