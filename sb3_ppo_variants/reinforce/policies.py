# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy
# that work for REINFORCE (the actor-critic policies of SB3: the value head is used only by baseline="value")
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
