"""Fine-tuning toward a reference policy: forgetting, the reward-KL frontier, and behaviour cloning -> RL.

Every run is PPOClip with its CartPole-v1 zoo hyperparameters (sb3_ppo_variants/zoo/hyperparams/ppo_clip.yml), started
from a source policy that the benchmark trains itself and caches (``<output>/runs/models/``, not committed; nothing is
downloaded), and fine-tuned with the reference-policy KL term (``ref_policy``, README "Fine-tuning toward a reference
policy") in the reward (RLHF's placement) unless said otherwise.

(a) Forgetting. The source ("expert") is PPOClip trained on CartPole-v1. The new task is the same CartPole with the two
    actions swapped (push left <-> push right, ``fine_tuning/CartPoleSwapped-v1``): a changed task on which the expert
    fails and whose solution fails the original task, so that what fine-tuning keeps of the original skill is visible.
    The expert (actor and critic, ``init_from_ref="actor_critic"``) is fine-tuned on it with beta = 0 (no term; the KL
    to the expert is still measured), fixed betas, and the adaptive (PPO paper) and proportional (Ziegler et al. 2019)
    controllers at several targets. Deterministic evaluations on the new task and on the original one (retention)
    every ``eval_every`` steps; ``train/ref_kl`` (exact mean KL(pi || pi_ref) on the rollout states, before each
    update) and beta after every update.
(b) The reward-KL frontier: the final new-task return against the final KL to the reference (mean ``ref_kl`` over the
    last 10 % of the updates), one point per setting and seed.
(c) BC -> RL on the original task: demonstrations recorded from the expert (``demo_steps`` sampled transitions),
    behaviour cloning (``sb3_ppo_variants.behaviour_cloning``) into a fresh PPOClip, then PPOClip fine-tuning of the
    cloned actor (new critic) with beta = 0 and with a KL term toward the cloned policy, against PPOClip from scratch.

Acceptance check in the report: the mean ``ref_kl`` over the second half of each proportional run, relative to its
``ref_kl_target`` (within +-50 % required by issue 13).

    python -m benchmarks.fine_tuning --workers 1              # the committed results (profile quick)
    python -m benchmarks.fine_tuning --profile full           # 5 seeds, longer fine-tuning
    python -m benchmarks.fine_tuning --smoke                  # CI smoke test (tiny budgets)
    python -m benchmarks.fine_tuning --report-only            # the report from the stored results

Results go to ``benchmarks/results/fine_tuning/<profile>/`` (``--output`` elsewhere).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from benchmarks import runner
from benchmarks.common import ZOO_ONLY_KEYS, experiment_parser, profile_and_output, zoo_entry
from benchmarks.runner import RunSpec, make_env, make_model, recorded

NAME = "fine_tuning"
ALGO = "ppo_clip"
ORIGINAL = "CartPole-v1"
SWAPPED = "fine_tuning/CartPoleSwapped-v1"
KEYS = ("train/ref_kl", "train/ref_kl_coef", "train/ref_kl_reward")
CACHE = "SB3PV_FINE_TUNING_CACHE"  # environment variable: the folder of the cached source policies


class SwapActions(gym.ActionWrapper):
    """CartPole with its two actions swapped: action 0 pushes right, action 1 pushes left."""

    def action(self, action: Any) -> Any:
        return 1 - action


def swapped_cartpole(**kwargs: Any) -> gym.Env:
    """:return: CartPole-v1 with the actions swapped (the new task of part (a))"""
    return SwapActions(gym.make(ORIGINAL, **kwargs))


if SWAPPED not in gym.registry:
    gym.register(id=SWAPPED, entry_point="benchmarks.fine_tuning:swapped_cartpole")

# part (a): setting -> the reference-term arguments (ref_policy and init_from_ref are added by the run)
FORGETTING: dict[str, dict[str, Any]] = {
    "beta=0": dict(ref_kl_coef=0.0),
    "fixed 0.05": dict(ref_kl_coef=0.05),
    "fixed 0.5": dict(ref_kl_coef=0.5),
    "fixed 0.5, loss": dict(ref_kl_coef=0.5, ref_kl_placement="loss"),
    "adaptive 0.05": dict(ref_kl_controller="adaptive", ref_kl_coef=0.1, ref_kl_target=0.05),
    "adaptive 0.5": dict(ref_kl_controller="adaptive", ref_kl_coef=0.1, ref_kl_target=0.5),
    "proportional 0.05": dict(ref_kl_controller="proportional", ref_kl_coef=0.1, ref_kl_target=0.05),
    "proportional 0.5": dict(ref_kl_controller="proportional", ref_kl_coef=0.1, ref_kl_target=0.5),
}
# part (c): setting -> the reference-term arguments toward the cloned policy (None: RL from scratch)
BC_TO_RL: dict[str, dict[str, Any] | None] = {
    "scratch": None,
    "BC -> RL, beta=0": dict(ref_kl_coef=0.0),
    "BC -> RL, fixed 0.05": dict(ref_kl_coef=0.05),
    "BC -> RL, proportional 0.05": dict(ref_kl_controller="proportional", ref_kl_coef=0.1, ref_kl_target=0.05),
}
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": [0, 1],
        "source_steps": 100_000,
        "finetune_steps": 50_000,
        "eval_every": 10_000,
        "eval_episodes": 5,
        "demo_steps": 250,
        "bc_epochs": 30,
        "forgetting": list(FORGETTING),
        "bc_to_rl": list(BC_TO_RL),
    },
    "full": {
        "seeds": [0, 1, 2, 3, 4],
        "source_steps": 100_000,
        "finetune_steps": 100_000,
        "eval_every": 10_000,
        "eval_episodes": 10,
        "demo_steps": 250,
        "bc_epochs": 30,
        "forgetting": list(FORGETTING),
        "bc_to_rl": list(BC_TO_RL),
    },
    "smoke": {
        "seeds": [0],
        "source_steps": 1_024,
        "finetune_steps": 1_024,
        "eval_every": 1_024,
        "eval_episodes": 1,
        "demo_steps": 100,
        "bc_epochs": 2,
        "forgetting": ["beta=0", "fixed 0.5, loss", "proportional 0.05"],
        "bc_to_rl": ["scratch", "BC -> RL, fixed 0.05"],
    },
}


def _slug(setting: str) -> str:
    return setting.replace(" -> ", "-").replace(", ", "-").replace("=", "").replace(" ", "-").replace(".", "p")


def make_specs(profile: dict[str, Any]) -> list[RunSpec]:
    """:return: one run (``fine_tune``) per (part, setting, seed)"""
    entry = zoo_entry(ALGO, ORIGINAL)
    common = dict(
        algo=ALGO,
        steps=profile["finetune_steps"],
        kwargs={k: v for k, v in entry.items() if k not in ZOO_ONLY_KEYS},
        n_envs=int(entry["n_envs"]),
        record_keys=KEYS,
        task="benchmarks.fine_tuning:fine_tune",
    )
    options = {key: profile[key] for key in ("source_steps", "eval_every", "eval_episodes", "demo_steps", "bc_epochs")}
    # part -> (run id prefix, training task, the settings' reference terms, source policy)
    parts = {"forgetting": ("forgetting", SWAPPED, FORGETTING, "expert"), "bc_to_rl": ("bc", ORIGINAL, BC_TO_RL, "bc")}
    specs = []
    for seed in profile["seeds"]:
        for part, (prefix, env_id, references, source) in parts.items():
            for setting in profile[part]:
                reference = references[setting]
                specs.append(
                    RunSpec(
                        run_id=f"{prefix}-{_slug(setting)}-s{seed}",
                        env_id=env_id,
                        seed=seed,
                        labels={"part": part, "setting": setting},
                        options={**options, "source": None if reference is None else source, "reference": reference},
                        **common,  # type: ignore[arg-type]
                    )
                )
    return specs


# ----- the source policies, trained once per seed and cached --------------------------------------------------------


def _cache_dir() -> Path:
    folder = os.environ.get(CACHE)
    if not folder:
        raise RuntimeError(
            f"{CACHE} is not set: run the benchmark through its command line (python -m benchmarks.fine_tuning)"
        )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_policy(kind: str, spec: RunSpec) -> Path:
    """
    The zip of the source policy of ``spec`` (``"expert"`` or ``"bc"``), trained on first use and cached; a lock file
    keeps parallel workers from training the same one twice.

    :return: its path
    """
    options = spec.options
    name = f"expert-s{spec.seed}-{options['source_steps']}"
    if kind == "bc":
        name = f"bc-s{spec.seed}-{options['source_steps']}-{options['demo_steps']}-{options['bc_epochs']}"
    path = _cache_dir() / f"{name}.zip"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            model = _train_expert(spec) if kind == "expert" else _clone_expert(spec)
            tmp = path.with_name(f"tmp-{path.name}")
            model.save(tmp)
            tmp.replace(path)
    return path


def _train_expert(spec: RunSpec) -> Any:
    expert_spec = dataclasses.replace(spec, env_id=ORIGINAL, steps=spec.options["source_steps"])
    model = make_model(expert_spec, make_env(expert_spec))
    model.learn(expert_spec.steps)
    return model


def _clone_expert(spec: RunSpec) -> Any:
    from sb3_ppo_variants import PPOClip, behaviour_cloning, record_demonstrations

    expert = PPOClip.load(source_policy("expert", spec), device="cpu")
    demonstrations = record_demonstrations(
        expert, ORIGINAL, n_steps=spec.options["demo_steps"], deterministic=False, seed=spec.seed + 1000
    )
    clone_spec = dataclasses.replace(spec, env_id=ORIGINAL)
    model = make_model(clone_spec, make_env(clone_spec))  # a fresh PPOClip: the clone's critic is untrained
    behaviour_cloning(model, demonstrations, n_epochs=spec.options["bc_epochs"], seed=spec.seed)
    return model


# ----- one fine-tuning run -------------------------------------------------------------------------------------------


def _evaluate(model: Any, env_id: str, episodes: int, seed: int) -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_vec_env(env_id, n_envs=episodes, seed=seed)  # one deterministic episode per environment
    returns, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True)
    env.close()
    return float(np.mean(returns))


def _make_evaluator(every: int, episodes: int, seed: int) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluator(BaseCallback):
        """Deterministic returns on the new task and on the original one, at the start and every ``every`` steps."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[list[float]] = []
            self._next = 0

        def _evaluate(self) -> None:
            tasks = (SWAPPED, ORIGINAL)
            self.rows.append([self.num_timesteps, *(_evaluate(self.model, task, episodes, seed + 10_000) for task in tasks)])
            self._next = self.num_timesteps + every

        def _on_training_start(self) -> None:
            self._evaluate()

        def _on_rollout_start(self) -> None:
            if self.num_timesteps >= self._next:
                self._evaluate()

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            if self.rows[-1][0] != self.num_timesteps:
                self._evaluate()

    return Evaluator()


def fine_tune(spec: RunSpec) -> dict[str, Any]:
    """
    The runner's task: fine-tune the source policy of ``spec`` (or train from scratch) and evaluate it along the way.

    :return: the Monitor episodes of the training task, the recorded ``KEYS`` and ``evals``: rows
        ``[timestep, new-task return, original-task return]`` (for part (c) both tasks' columns are kept as they are)
    """
    from stable_baselines3.common.callbacks import CallbackList

    options = spec.options
    kwargs = dict(spec.kwargs)
    if options["reference"] is not None:
        source = source_policy(options["source"], spec)
        init = "actor_critic" if options["source"] == "expert" else "actor"  # the clone's critic was never trained
        kwargs.update(options["reference"], ref_policy=str(source), init_from_ref=init)
    env = make_env(spec)
    model = make_model(dataclasses.replace(spec, kwargs=kwargs), env)
    recorder = runner._make_recorder(tuple(spec.record_keys))
    evaluator = _make_evaluator(options["eval_every"], options["eval_episodes"], spec.seed)
    model.learn(spec.steps, callback=CallbackList([recorder, evaluator]))
    env.close()
    return {"episodes": recorder.episodes, "records": recorder.records, "evals": evaluator.rows}


# ----- report --------------------------------------------------------------------------------------------------------


def run_summary(run: dict) -> dict[str, Any]:
    """:return: the numbers of one run that the report uses"""
    evals = np.array(run["evals"], dtype=float)
    ref_kl = recorded(run, "train/ref_kl")[:, 1]
    coef = recorded(run, "train/ref_kl_coef")[:, 1]
    last = max(1, len(ref_kl) // 10)
    summary: dict[str, Any] = {
        "seed": run["spec"]["seed"],
        "start_new_task": float(evals[0, 1]),
        "start_original_task": float(evals[0, 2]),
        "final_new_task": float(evals[-1, 1]),
        "final_original_task": float(evals[-1, 2]),
        "final_training_return": runner.final_score(run, last=20),
        "updates": len(ref_kl),
    }
    if len(ref_kl):
        summary["final_ref_kl"] = float(np.mean(ref_kl[-last:]))
        summary["second_half_ref_kl"] = float(np.mean(ref_kl[len(ref_kl) // 2 :]))
        summary["max_ref_kl"] = float(np.max(ref_kl))
        summary["final_ref_kl_coef"] = float(coef[-1])
    return summary


def summarise(runs: dict[str, dict], profile: dict[str, Any]) -> dict[str, Any]:
    """:return: the content of ``results.json``: per part and setting, the per-seed summaries and their means"""
    rows = []
    for part, settings in (("forgetting", profile["forgetting"]), ("bc_to_rl", profile["bc_to_rl"])):
        for setting in settings:
            members = sorted(
                (r for r in runs.values() if r["spec"]["labels"] == {"part": part, "setting": setting}),
                key=lambda r: r["spec"]["seed"],
            )
            if not members:
                continue
            per_seed = [run_summary(run) for run in members]
            reference = (FORGETTING if part == "forgetting" else BC_TO_RL)[setting] or {}
            row: dict[str, Any] = {"part": part, "setting": setting, "reference": reference, "per_seed": per_seed}
            for key in per_seed[0]:
                if key not in ("seed", "updates"):
                    row[key] = float(np.mean([s[key] for s in per_seed]))
            target = reference.get("ref_kl_target")
            if target is not None and reference.get("ref_kl_controller") == "proportional":
                ratios = [s["second_half_ref_kl"] / target for s in per_seed]
                row["second_half_ref_kl_over_target"] = ratios
                row["within_50_percent"] = all(0.5 <= r <= 1.5 for r in ratios)
            rows.append(row)
    return {"rows": rows, "profile": profile}


def _mean_curve(members: list[dict], column: int) -> tuple[np.ndarray, np.ndarray]:
    evals = [np.array(run["evals"], dtype=float) for run in members]
    length = min(len(e) for e in evals)
    return evals[0][:length, 0], np.mean([e[:length, column] for e in evals], axis=0)


def write_figures(runs: dict[str, dict], result: dict[str, Any], out_dir: Path) -> None:
    """``fine_tuning.png`` (parts a and b) and ``bc_to_rl.png`` (part c)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile = result["profile"]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    for i, setting in enumerate(profile["forgetting"]):
        members = [r for r in runs.values() if r["spec"]["labels"] == {"part": "forgetting", "setting": setting}]
        if not members:
            continue
        color = colors(i % 10)
        for column, ax in ((1, axes[0]), (2, axes[1])):
            steps, mean = _mean_curve(members, column)
            ax.plot(steps, mean, color=color, marker="o", ms=3, label=setting)
        for j, run in enumerate(members):
            kl = recorded(run, "train/ref_kl")
            axes[2].plot(
                kl[:, 0], np.clip(kl[:, 1], 1e-5, None), color=color, lw=0.8, alpha=0.7, label=setting if j == 0 else None
            )
            point = run_summary(run)
            axes[3].scatter(
                point.get("final_ref_kl", np.nan),
                point["final_new_task"],
                color=color,
                s=25,
                label=setting if j == 0 else None,
            )
        target = FORGETTING[setting].get("ref_kl_target")
        if target is not None:
            axes[2].axhline(target, color=color, ls=":", lw=1)
    axes[0].set_title("(a) new task (actions swapped): deterministic return", fontsize=9)
    axes[1].set_title("(a) original task (retention): deterministic return", fontsize=9)
    axes[2].set_title("(a) train/ref_kl = KL(pi || pi_expert) per update (dotted: targets)", fontsize=9)
    axes[3].set_title("(b) reward-KL frontier: one point per setting and seed", fontsize=9)
    for ax in axes[:3]:
        ax.set_xlabel("fine-tuning steps (mean over seeds for the returns)")
    axes[2].set_yscale("log")
    axes[3].set_xscale("log")
    axes[3].set_xlabel("final KL to the expert (mean ref_kl, last 10 % of the updates)")
    axes[3].set_ylabel("final new-task return")
    axes[0].set_ylabel("return")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_dir / "fine_tuning.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    grid = np.linspace(0, profile["finetune_steps"], 60)
    for i, setting in enumerate(profile["bc_to_rl"]):
        members = [r for r in runs.values() if r["spec"]["labels"] == {"part": "bc_to_rl", "setting": setting}]
        if not members:
            continue
        color = colors(i % 10)
        with warnings.catch_warnings():  # NaN before the first episode of every seed
            warnings.simplefilter("ignore", RuntimeWarning)
            training = np.nanmean([runner.curve(run, grid) for run in members], axis=0)
        axes[0].plot(grid, training, color=color, label=setting)
        steps, mean = _mean_curve(members, 2)
        axes[1].plot(steps, mean, color=color, marker="o", ms=3, label=setting)
    axes[0].set_title("(c) CartPole-v1 training return (Monitor, last 10 episodes, mean over seeds)")
    axes[1].set_title("(c) deterministic evaluation return (mean over seeds)")
    for ax in axes:
        ax.set_xlabel("steps")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "bc_to_rl.png", dpi=100)
    plt.close(fig)


def _fmt(value: Any, digits: str = ".0f") -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, digits)


def write_report(result: dict[str, Any], out_dir: Path) -> str:
    """Write ``results.md``; :return: its content"""
    manifest = json.loads((out_dir / "manifest.json").read_text()) if (out_dir / "manifest.json").exists() else {}
    lines = [f"Command: `{manifest.get('command', '?')}`", ""]
    lines += [
        "(a, b) Expert fine-tuned on CartPole with the actions swapped. Returns: deterministic evaluation, mean over seeds "
        "(start -> end of fine-tuning). KL: mean `train/ref_kl` over the last 10 % of the updates.",
        "",
        "| setting | new task | original task (retention) | final KL to expert | max KL | final beta | KL 2nd half / target |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in (r for r in result["rows"] if r["part"] == "forgetting"):
        ratio = ", ".join(f"{r:.2f}" for r in row.get("second_half_ref_kl_over_target", [])) or ""
        lines.append(
            f"| {row['setting']} | {_fmt(row['start_new_task'])} -> {_fmt(row['final_new_task'])} | "
            f"{_fmt(row['start_original_task'])} -> {_fmt(row['final_original_task'])} | "
            f"{_fmt(row.get('final_ref_kl'), '.3g')} | {_fmt(row.get('max_ref_kl'), '.3g')} | "
            f"{_fmt(row.get('final_ref_kl_coef'), '.3g')} | {ratio} |"
        )
    lines += [
        "",
        "(c) CartPole-v1 from a behaviour-cloned policy vs from scratch. Returns: deterministic evaluation at the start and "
        "the end, and the mean of the last 20 training episodes (Monitor).",
        "",
        "| setting | eval start -> end | last 20 training episodes | final KL to the clone |",
        "|---|---|---|---|",
    ]
    for row in (r for r in result["rows"] if r["part"] == "bc_to_rl"):
        lines.append(
            f"| {row['setting']} | {_fmt(row['start_original_task'])} -> {_fmt(row['final_original_task'])} | "
            f"{_fmt(row['final_training_return'])} | {_fmt(row.get('final_ref_kl'), '.3g')} |"
        )
    lines += ["", "![forgetting and frontier](fine_tuning.png)", "", "![BC -> RL](bc_to_rl.png)", ""]
    text = "\n".join(lines)
    (out_dir / "results.md").write_text(text)
    return text


EXPERIMENT = runner.Experiment(NAME, __doc__, PROFILES, "quick", make_specs, summarise, write_report, write_figures)


def main(argv: list[str] | None = None) -> Path:
    """The runner's command line, with the cache of source policies in ``<output>/runs/models/`` (for the workers)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, _ = experiment_parser(EXPERIMENT.doc, PROFILES, EXPERIMENT.default_profile).parse_known_args(argv)
    if args.smoke and args.output is None:  # the folder must be known before the runner starts the workers
        argv += ["--output", tempfile.mkdtemp(prefix=f"{NAME}_smoke_")]
        args.output = Path(argv[-1])
    _, out_dir = profile_and_output(args, NAME)
    os.environ[CACHE] = str(out_dir / "runs" / "models")
    return runner.main(EXPERIMENT, argv)


if __name__ == "__main__":
    main()
