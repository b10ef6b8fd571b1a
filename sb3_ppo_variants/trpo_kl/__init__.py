from sb3_ppo_variants.trpo_kl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.trpo_kl.trpo_kl import TRPOKL

__all__ = ["TRPOKL", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
