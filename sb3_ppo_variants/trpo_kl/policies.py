# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy
# that work for TRPOKL (the actor-critic policies of SB3, as sb3_contrib.trpo.policies)
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
