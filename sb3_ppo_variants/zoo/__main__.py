"""Hook-free launcher: ``python -m sb3_ppo_variants.zoo {train,enjoy} [rl-zoo3 arguments]``.

Registers this package with rl-zoo3 explicitly, then runs rl-zoo3's own script with the rest of
the command line, so it works even with ``SB3_PPO_VARIANTS_ZOO_HOOK=0`` or without the ``.pth`` hook.
"""

import sys

SCRIPTS = ("train", "enjoy")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in SCRIPTS:
        raise SystemExit(f"usage: python -m sb3_ppo_variants.zoo {{{','.join(SCRIPTS)}}} [rl-zoo3 arguments]")
    from sb3_ppo_variants.zoo import register

    register()
    script, rest = argv[0], argv[1:]
    sys.argv = [f"rl_zoo3.{script}", *rest]
    if script == "train":
        from rl_zoo3.train import train

        train()
    else:
        from rl_zoo3.enjoy import enjoy

        enjoy()


if __name__ == "__main__":
    main()
