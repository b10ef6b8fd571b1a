# This file is here just to define MlpPolicy/CnnPolicy/MultiInputPolicy
# that work for PPOClip (the actor-critic policies of SB3)
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
