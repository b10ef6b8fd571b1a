from sb3_ppo_variants.ppo_clip.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.ppo_clip.ppo_clip import PPOClip

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PPOClip"]
