"""Hook-free launcher: ``python -m sb3_ppo_variants.zoo ROUTE [rl-zoo3 arguments]``.

Registers this package with rl-zoo3 explicitly, then runs rl-zoo3's own script with the rest of
the command line, so it works even with ``SB3_PPO_VARIANTS_ZOO_HOOK=0`` or without the ``.pth`` hook.
``python -m sb3_ppo_variants.zoo --help`` lists the routes; ``ROUTE --help`` shows rl-zoo3's own options.
"""

from __future__ import annotations

import runpy
import sys

# route -> (rl-zoo3 module, entry function or None to run the module as __main__, one-line description)
ROUTES: dict[str, tuple[str, str | None, str]] = {
    "train": ("rl_zoo3.train", "train", "train an agent (also -optimize for Optuna tuning, -i to continue training)"),
    "enjoy": ("rl_zoo3.enjoy", "enjoy", "run a trained agent (--no-render when headless)"),
    "record_video": ("rl_zoo3.record_video", None, "record a video of a trained agent (needs the zoo extra: moviepy, pygame)"),
    "all_plots": (
        "rl_zoo3.plots.all_plots",
        "all_plots",
        "evaluation curves and a results table from the zoo's evaluations.npz (-o FILE.pkl saves the data)",
    ),
    "plot_from_file": (
        "rl_zoo3.plots.plot_from_file",
        "plot_from_file",
        "plots from an all_plots pickle (see docs/zoo_tools.md for its limits)",
    ),
}
# SB3_PPO_VARIANTS: the routes rl-zoo3 ships that are broken upstream or only show a window (docs/zoo_tools.md)
NOT_ROUTED = {
    "plot_train": "only calls plt.show() and writes nothing: use `python -m sb3_ppo_variants.plot`",
    "benchmark": "runs an enjoy.py that only exists in a zoo checkout",
    "record_training": "needs a system ffmpeg",
    "push_to_hub": "fails to import with the current hub integration",
}


def usage() -> str:
    """The launcher's help text: the routes it supports and the zoo tools it does not route.

    :return: the text printed by ``--help``
    """
    width = max(len(name) for name in (*ROUTES, *NOT_ROUTED))
    lines = [
        "usage: python -m sb3_ppo_variants.zoo ROUTE [rl-zoo3 arguments]",
        "       python -m sb3_ppo_variants.zoo ROUTE --help   (rl-zoo3's options for that route)",
        "",
        "Registers ppo_kl, ppo_clip, trpo_kl and reinforce with rl-zoo3 (no start-up hook needed), then runs",
        "rl-zoo3's script of that route with the remaining arguments.",
        "",
        "routes:",
        *(f"  {name:<{width}}  {description}" for name, (_, _, description) in ROUTES.items()),
        "",
        "not routed (rl-zoo3 tools that do not work as shipped; see docs/zoo_tools.md):",
        *(f"  {name:<{width}}  {reason}" for name, reason in NOT_ROUTED.items()),
        "",
        "diagnostics figures from zoo or SB3 logs: python -m sb3_ppo_variants.plot --help",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run one rl-zoo3 route with this package registered.

    :param argv: the command line without the program name (default: ``sys.argv[1:]``)
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return
    if not argv or argv[0] not in ROUTES:
        given = f"unknown route {argv[0]!r}" if argv else "no route given"
        print(f"{usage()}\n\nerror: {given}; choose one of {', '.join(ROUTES)}", file=sys.stderr)
        raise SystemExit(2)
    from sb3_ppo_variants.zoo import register

    register()
    route, rest = argv[0], argv[1:]
    module, function, _ = ROUTES[route]
    sys.argv = [module, *rest]
    if function is None:
        # the script's code lives under `if __name__ == "__main__":`
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        getattr(__import__(module, fromlist=[function]), function)()


if __name__ == "__main__":
    main()
