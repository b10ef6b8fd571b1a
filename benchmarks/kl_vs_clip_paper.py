"""
PPOKL with the PPO paper's settings on HalfCheetah-v5, as an rl-zoo3 hyperparameter file (``-conf``; rl-zoo3 runs a
``.py`` file and reads its ``hyperparams``):

    python -m rl_zoo3.train --algo ppo_kl --env HalfCheetah-v5 --seed 0 -conf benchmarks/kl_vs_clip_paper.py

It is the entry ppo_kl.yml gives its other MuJoCo tasks (``benchmarks.common.PAPER_ENTRY``: adaptive KL, d_targ = 0.01,
beta_0 = 1, 64x64 tanh networks, Adam 3e-4, 10 epochs of minibatch 64 over 2048 steps, gamma 0.99), which was its
HalfCheetah-v5 entry until PPOKL with PPOClip's settings (the adaptive penalty in place of the clipping) replaced it
there: the runs of ``benchmarks.kl_vs_clip`` showed why.
"""

from benchmarks.common import PAPER_ENTRY, zoo_entry

ENV_ID = "HalfCheetah-v5"


def paper_entry() -> dict:
    """:return: ppo_kl.yml's PPO-paper entry"""
    algo, entry_id = PAPER_ENTRY
    return zoo_entry(algo, ENV_ID, entry_id)


hyperparams = {ENV_ID: paper_entry()}
