"""
A candidate ``ppo_kl`` entry for HalfCheetah-v5, as an rl-zoo3 hyperparameter file (``-conf``; rl-zoo3 runs a ``.py``
file and reads its ``hyperparams``):

    python -m rl_zoo3.train --algo ppo_kl --env HalfCheetah-v5 --seed 0 -conf benchmarks/kl_vs_clip_candidate.py

It is PPOClip's shipped entry (rl-zoo3's tuned PPO entry for HalfCheetah: 256x256 ReLU networks, log_std_init -2,
Adam 2e-5, 20 epochs of minibatch 64 over 512 steps, gamma 0.98, ...) with the clipping (``clip_range: 0.1``) replaced
by PPOKL's adaptive penalty as ppo_kl.yml ships it (``kl_controller: adaptive``, ``kl_target: 0.01``, ``kl_coef: 1``):
the same settings but for the surrogate, read from the two files so that it follows them.
"""

from benchmarks.common import zoo_entry

ENV_ID = "HalfCheetah-v5"
#: the keys of PPOKL's penalty, taken from ppo_kl.yml's entry
PENALTY_KEYS = ("kl_controller", "kl_target", "kl_coef")


def candidate_entry(env_id: str = ENV_ID) -> dict:
    """:return: ppo_clip.yml's entry of ``env_id`` without ``clip_range``, with ppo_kl.yml's penalty settings"""
    clip, kl = zoo_entry("ppo_clip", env_id), zoo_entry("ppo_kl", env_id)
    entry = {key: value for key, value in clip.items() if key != "clip_range"}
    entry.update({key: kl[key] for key in PENALTY_KEYS})
    return entry


hyperparams = {ENV_ID: candidate_entry()}
