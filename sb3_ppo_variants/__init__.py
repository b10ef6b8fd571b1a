"""sb3_ppo_variants: the policy-gradient family for Stable-Baselines3, with one diagnostics vocabulary."""

import os

from sb3_ppo_variants.common.pretraining import Demonstrations, behaviour_cloning, record_demonstrations
from sb3_ppo_variants.ppo_clip import PPOClip
from sb3_ppo_variants.ppo_kl import PPOKL
from sb3_ppo_variants.reinforce import REINFORCE
from sb3_ppo_variants.trpo_kl import TRPOKL

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "PPOKL",
    "REINFORCE",
    "TRPOKL",
    "Demonstrations",
    "PPOClip",
    "__version__",
    "behaviour_cloning",
    "record_demonstrations",
]
