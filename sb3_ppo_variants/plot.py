"""The diagnostics plot command: ``python -m sb3_ppo_variants.plot RUN_OR_ROOT [...] --output FIGURE.png``.

Reads the logs that rl-zoo3 and SB3 write (TensorBoard event files, read with tensorboard's
``EventAccumulator``, or SB3's ``progress.csv``) from one or more folders, groups the runs by algorithm and
draws one panel per diagnostics key, one curve per algorithm: the mean over its runs (seeds) and a band
(min-max by default, or ± one standard deviation). The figure is always saved (PNG, SVG or PDF, from the file
name), never only shown: matplotlib runs with its non-interactive Agg backend.

Where the runs come from:

- a TensorBoard root, e.g. the zoo's ``-tb logs/tb``: every folder below it that holds event files is a run
  (``logs/tb/CartPole-v1/PPOKL_1``); its algorithm is the folder name without the ``_<n>`` counter, mapped back
  to the zoo key for this package's classes (``PPOKL`` -> ``ppo_kl``);
- a folder in the zoo's layout ``<algo>/<env>_<n>`` (``logs/ppo_kl/CartPole-v1_1``) or above it (``logs/``):
  its algorithm is ``<algo>``. The zoo keeps no diagnostics there itself: its TensorBoard run is found from the
  ``-tb`` folder recorded in ``<env>_<n>/<env>/args.yml`` (the TensorBoard run started closest in time);
- any folder with event files or a ``progress.csv`` (SB3's ``configure(folder, ["csv", "tensorboard"])``):
  its algorithm is the folder name, or ``--label``.

Needs matplotlib and tensorboard: ``pip install "sb3-ppo-variants[zoo]"``.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sb3_ppo_variants.zoo.algos import ZOO_ALGOS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EXTRA_HINT = 'the plot command needs matplotlib and tensorboard: pip install "sb3-ppo-variants[zoo]"'

# The keys the command knows, with a one-line meaning each (README's metrics table has the formulas)
KNOWN_KEYS: dict[str, str] = {
    "rollout/ep_rew_mean": "mean episode return over the last 100 episodes (SB3's stats window)",
    "train/policy_kl": "exact mean KL(pi_old || pi_new) over the rollout states after the update: the real step size",
    "train/approx_kl": "k3 estimate of KL(pi_old || pi_new), averaged over the minibatches (SB3's estimator)",
    "train/kl_coef": "PPOKL's penalty coefficient beta used during the update",
    "train/kl_target": "PPOKL's KL target d_targ",
    "train/ratio_mean": "mean importance ratio pi_new / pi_old",
    "train/ratio_std": "standard deviation of the importance ratio",
    "train/ratio_min": "smallest importance ratio",
    "train/ratio_max": "largest importance ratio",
    "train/ess": "normalised effective sample size (sum w)^2 / (n sum w^2) of the ratios, in (0, 1]; 1 = on-policy",
    "train/grad_snr": "gradient signal-to-noise ||mean g||^2 / mean ||g - mean g||^2 over the minibatches",
    "train/grad_variance": "trace of the covariance of REINFORCE's per-episode gradient estimates",
    "train/grad_norm": "global gradient norm before clipping, mean over minibatches",
    "train/clip_fraction": "fraction of ratios outside the clip range",
    "train/entropy_loss": "minus the mean policy entropy",
    "train/explained_variance": "explained variance of the value function on the rollout",
    "train/ref_kl": "exact mean KL to the reference policy",
}
# drawn when --keys is not given; patterns (fnmatch) are expanded against the keys present in the logs
DEFAULT_KEYS = (
    "rollout/ep_rew_mean",
    "train/policy_kl",
    "train/kl_coef",
    "train/ratio_*",
    "train/ess",
    "train/grad_snr",
    "train/grad_variance",
)
BANDS = ("minmax", "std", "none")
STEP_COLUMN = "time/total_timesteps"  # SB3's x axis in progress.csv; TensorBoard steps are num_timesteps too
# this package's TensorBoard run names (the classes' tb_log_name) -> zoo keys
CLASS_TO_KEY = {class_name: key for key, (_, class_name) in ZOO_ALGOS.items()}
COUNTER = re.compile(r"^(?P<name>.+)_(?P<n>\d+)$")
ENV_ID = re.compile(r"-v\d+$")


class PlotError(ValueError):
    """A bad argument of the plot command; the message names the argument."""


@dataclass
class Run:
    """The scalars of one training run.

    :param path: the folder its logs were read from
    :param label: its algorithm (the group it is aggregated in)
    :param env: its environment id, if the folder layout says it
    :param scalars: key -> (steps, values), sorted by step
    """

    path: Path
    label: str
    env: str | None = None
    scalars: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def _require_extras() -> None:
    """Import matplotlib (with the Agg backend) and tensorboard, or fail naming the extra to install."""
    try:
        import matplotlib
        import tensorboard  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{EXTRA_HINT} ({error})") from error
    matplotlib.use("Agg")


def _has_events(folder: Path) -> bool:
    return any(folder.glob("events.out.tfevents.*"))


def read_tensorboard(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read every scalar of the event files in one folder (not its sub-folders).

    :param folder: a TensorBoard run folder
    :return: key -> (steps, values), sorted by step (the last value wins where a step repeats)
    """
    _require_extras()
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0 = keep every event
    accumulator.Reload()
    scalars = {}
    for key in accumulator.Tags()[SCALARS]:
        events = accumulator.Scalars(key)
        scalars[key] = _sorted_unique([e.step for e in events], [e.value for e in events])
    return scalars


def read_progress_csv(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read SB3's ``progress.csv`` (one row per dump, empty cells where a key was not logged).

    :param path: the csv file
    :return: key -> (steps, values) against ``time/total_timesteps``, sorted by step
    """
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    scalars = {}
    for key in rows[0].keys() if rows else ():
        if key == STEP_COLUMN:
            continue
        pairs = [(_number(row.get(STEP_COLUMN)), _number(row.get(key))) for row in rows]
        pairs = [(s, v) for s, v in pairs if not math.isnan(s) and not math.isnan(v)]
        if pairs:
            scalars[key] = _sorted_unique([s for s, _ in pairs], [v for _, v in pairs])
    return scalars


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan  # type: ignore[arg-type]
    except ValueError:
        return math.nan


def _sorted_unique(steps: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    steps_array, values_array = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    order = np.argsort(steps_array, kind="stable")
    steps_array, values_array = steps_array[order], values_array[order]
    # keep the last value logged at each step (a resumed run logs its first step again)
    last = np.r_[steps_array[1:] != steps_array[:-1], True]
    return steps_array[last], values_array[last]


def _label_of(folder: Path) -> tuple[str, str | None]:
    """The algorithm and environment a run folder's place in the zoo's or TensorBoard's layout says.

    :param folder: a run folder
    :return: (label, env or None)
    """
    for part in (folder, *folder.parents):
        match = COUNTER.match(part.name)
        if match is None:
            continue
        name = match["name"]
        if ENV_ID.search(name):  # zoo layout <algo>/<env>_<n>
            return part.parent.name, name
        # TensorBoard layout [<env>/]<TbLogName>_<n>
        env = part.parent.name if ENV_ID.search(part.parent.name) else None
        return CLASS_TO_KEY.get(name, name), env
    return folder.name, None


def _zoo_tensorboard_run(zoo_run: Path) -> Path | None:
    """The TensorBoard run of a zoo run folder ``<algo>/<env>_<n>``, found from the ``-tb`` folder in its args.yml.

    :param zoo_run: the zoo run folder
    :return: the TensorBoard run folder that started closest in time to the zoo run, or None
    """
    import yaml

    class ArgsLoader(yaml.SafeLoader):
        """A safe loader that also reads the one Python tag the zoo writes (its arguments as an OrderedDict)."""

    def ordered_dict(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> dict[str, Any]:
        (pairs,) = loader.construct_sequence(node, deep=True)
        return dict(pairs)

    ArgsLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    match = COUNTER.match(zoo_run.name)
    args_file = zoo_run / match["name"] / "args.yml" if match else None
    if args_file is None or not args_file.is_file():
        return None
    with open(args_file) as file:
        loaded = yaml.load(file, Loader=ArgsLoader)
    args = dict(loaded) if isinstance(loaded, dict) else {}
    tensorboard_log, env = args.get("tensorboard_log"), args.get("env")
    if not tensorboard_log or not env:
        return None
    root = Path(tensorboard_log)
    if not root.is_absolute():  # relative to where the zoo ran: try the folder holding the zoo's log folder
        candidates = [zoo_run.parents[2] / root, Path.cwd() / root]
        root = next((c for c in candidates if c.is_dir()), candidates[0])
    runs = [f for f in (root / str(env)).glob("*_*") if f.is_dir() and _has_events(f)]
    # the runs of this algorithm (its TensorBoard name is our class name, or SB3's upper-case key), if any
    same_algorithm = [
        f for f in runs if CLASS_TO_KEY.get(f.name.rsplit("_", 1)[0], f.name.rsplit("_", 1)[0].lower()) == zoo_run.parent.name
    ]
    runs = same_algorithm or runs
    if not runs:
        return None
    started = args_file.stat().st_mtime  # written just before learning starts
    return min(runs, key=lambda f: abs(_events_started(f) - started))


def _events_started(folder: Path) -> float:
    """When the first event file of a TensorBoard run folder was created.

    :param folder: a TensorBoard run folder
    :return: the Unix time in the first event file's name (``events.out.tfevents.<time>.<host>...``)
    """
    times = []
    for events in folder.glob("events.out.tfevents.*"):
        stamp = events.name.split(".")[3]
        times.append(float(stamp) if stamp.isdigit() else events.stat().st_mtime)
    return min(times)


def find_runs(folder: Path, label: str | None = None, argument: str = "folders") -> list[Run]:
    """Every run below one folder, read.

    :param folder: a run folder, a zoo log folder or a TensorBoard root
    :param label: the algorithm to file every run of this folder under (default: from the layout)
    :param argument: the argument's name for error messages
    :return: the runs, sorted by path
    """
    if not folder.is_dir():
        raise PlotError(f"{argument}: {folder} is not a folder")
    run_folders: dict[Path, Path | None] = {}  # run folder -> TensorBoard folder to read (None: progress.csv)
    for candidate in sorted({folder, *(p for p in folder.rglob("*") if p.is_dir())}):
        if _has_events(candidate):
            run_folders[candidate] = candidate
        elif (candidate / "progress.csv").is_file():
            run_folders[candidate] = None
    if not run_folders:  # zoo run folders keep no logs of their own: follow their args.yml to -tb
        for candidate in sorted({folder, *(p for p in folder.rglob("*_*") if p.is_dir())}):
            if COUNTER.match(candidate.name) and ENV_ID.search(COUNTER.match(candidate.name)["name"]):  # type: ignore[index]
                tensorboard_run = _zoo_tensorboard_run(candidate)
                if tensorboard_run is not None:
                    run_folders[candidate] = tensorboard_run
    if not run_folders:
        raise PlotError(
            f"{argument}: no TensorBoard event files or progress.csv under {folder} (rl-zoo3 writes its diagnostics only "
            "with -tb DIR: pass DIR, or train with it)"
        )
    runs = []
    for run_folder, tensorboard_folder in run_folders.items():
        inferred_label, env = _label_of(run_folder)
        scalars = (
            read_tensorboard(tensorboard_folder) if tensorboard_folder else read_progress_csv(run_folder / "progress.csv")
        )
        if not scalars:
            continue
        runs.append(Run(path=run_folder, label=label or inferred_label, env=env, scalars=scalars))
    if not runs:
        raise PlotError(f"{argument}: the logs under {folder} hold no scalars")
    return runs


def select_keys(runs: Sequence[Run], keys: Sequence[str] | None) -> list[str]:
    """The keys to draw, in order: patterns expanded against the keys present in the runs.

    :param runs: the runs read
    :param keys: the keys (or fnmatch patterns) asked for with ``--keys``; None for :data:`DEFAULT_KEYS`
    :return: the keys present in at least one run
    """
    present = sorted({key for run in runs for key in run.scalars})
    selected: list[str] = []
    for pattern in DEFAULT_KEYS if keys is None else keys:
        matches = fnmatch.filter(present, pattern) if any(c in pattern for c in "*?[") else [pattern] * (pattern in present)
        if not matches and keys is not None:
            raise PlotError(f"--keys: {pattern!r} is in none of the runs' logs (keys found: {', '.join(present)})")
        selected += [m for m in matches if m not in selected]
    if not selected:
        raise PlotError(f"--keys: none of {', '.join(DEFAULT_KEYS)} is in the logs; give --keys (found: {', '.join(present)})")
    return selected


def aggregate(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "minmax") -> tuple[np.ndarray, ...]:
    """Mean and band of several runs' curves of one key, on the steps where every run has data.

    :param curves: (steps, values) per run
    :param band: ``"minmax"`` (min and max over the runs), ``"std"`` (mean ± one standard deviation) or ``"none"``
    :return: (steps, mean, lower, upper); each run is linearly interpolated onto the union of the steps in the range
        that all runs cover (the runs' own steps when they agree, as for seeds of one configuration)
    """
    start = max(float(steps[0]) for steps, _ in curves)
    stop = min(float(steps[-1]) for steps, _ in curves)
    if start > stop:  # no common range (e.g. runs of different lengths that do not overlap): keep the longest
        curves = [max(curves, key=lambda curve: len(curve[0]))]
        start, stop = float(curves[0][0][0]), float(curves[0][0][-1])
    grid = np.unique(np.concatenate([steps[(steps >= start) & (steps <= stop)] for steps, _ in curves]))
    stacked = np.stack([np.interp(grid, steps, values) for steps, values in curves])
    mean = stacked.mean(axis=0)
    if band == "minmax":
        lower, upper = stacked.min(axis=0), stacked.max(axis=0)
    elif band == "std":
        std = stacked.std(axis=0)
        lower, upper = mean - std, mean + std
    else:
        lower = upper = mean
    return grid, mean, lower, upper


def _groups(runs: Sequence[Run]) -> dict[str, list[Run]]:
    envs = {run.env for run in runs if run.env}
    groups: dict[str, list[Run]] = {}
    for run in runs:
        name = f"{run.label} ({run.env})" if len(envs) > 1 and run.env else run.label
        groups.setdefault(name, []).append(run)
    return groups


def plot_runs(
    runs: Sequence[Run],
    keys: Sequence[str] | None = None,
    band: str = "minmax",
    columns: int = 3,
    title: str | None = None,
) -> Figure:
    """Draw one panel per key, one curve (mean over runs) and band per algorithm.

    :param runs: the runs, from :func:`find_runs`
    :param keys: keys or fnmatch patterns (default :data:`DEFAULT_KEYS`, those present)
    :param band: ``"minmax"``, ``"std"`` or ``"none"``
    :param columns: panels per row
    :param title: the figure's title (default: the environments and the number of runs per algorithm)
    :return: the matplotlib figure, with one axes per drawn key (``figure.axes`` in key order)
    """
    _require_extras()
    from matplotlib.figure import Figure

    if band not in BANDS:
        raise PlotError(f"--band must be one of {', '.join(BANDS)}, got {band!r}")
    if columns < 1:
        raise PlotError(f"--columns must be >= 1, got {columns}")
    selected = select_keys(runs, keys)
    groups = _groups(runs)
    n_columns = min(columns, len(selected))
    n_rows = math.ceil(len(selected) / n_columns)
    figure = Figure(figsize=(4.2 * n_columns, 3.0 * n_rows + 0.6), layout="constrained")
    colors = [f"C{i % 10}" for i in range(len(groups))]
    for index, key in enumerate(selected):
        axes = figure.add_subplot(n_rows, n_columns, index + 1)
        for color, (name, members) in zip(colors, groups.items(), strict=True):
            curves = [run.scalars[key] for run in members if key in run.scalars and len(run.scalars[key][0])]
            if not curves:
                continue
            steps, mean, lower, upper = aggregate(curves, band)
            axes.plot(steps, mean, color=color, label=f"{name} ({len(curves)})", linewidth=1.4)
            if band != "none" and len(curves) > 1:
                axes.fill_between(steps, lower, upper, color=color, alpha=0.2, linewidth=0)
        axes.set_title(key, fontsize=10)
        axes.set_xlabel("timesteps", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if key in ("train/kl_coef", "train/grad_snr", "train/grad_variance", "train/policy_kl") and _positive(axes):
            axes.set_yscale("log")
    seen: dict[str, Any] = {}  # one legend entry per algorithm, from whichever panel drew it first
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    figure.legend(list(seen.values()), list(seen.keys()), loc="outside lower center", ncols=min(len(seen), 4), fontsize=9)
    band_text = {"minmax": "mean and min-max over runs", "std": "mean ± std over runs", "none": "mean over runs"}[band]
    envs = sorted({run.env for run in runs if run.env})
    figure.suptitle(title or f"{', '.join(envs) + ': ' if envs else ''}{band_text} (runs per algorithm in brackets)")
    return figure


def _positive(axes: Any) -> bool:
    data = [line.get_ydata() for line in axes.get_lines()]
    return bool(data) and all(np.all(np.asarray(values) > 0) for values in data)


def save_figure(figure: Figure, output: Path, dpi: int = 120) -> None:
    """Save a figure; the format is the file's suffix (png, svg, pdf).

    :param figure: the figure
    :param output: the file to write (its folder is created)
    :param dpi: resolution of a PNG
    """
    if output.suffix.lower().lstrip(".") not in ("png", "svg", "pdf"):
        raise PlotError(f"--output must end in .png, .svg or .pdf, got {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)


def _help_epilog() -> str:
    width = max(len(key) for key in KNOWN_KEYS)
    lines = ["keys it knows (default set: " + ", ".join(DEFAULT_KEYS) + "):"]
    lines += [f"  {key:<{width}}  {meaning}" for key, meaning in KNOWN_KEYS.items()]
    lines += [
        "",
        "Any other logged key can be given with --keys; patterns such as 'train/ratio_*' are expanded.",
        "Default keys absent from every run are left out; a --keys entry absent from every run is an error.",
        "",
        "examples:",
        "  python -m sb3_ppo_variants.plot logs/tb --output diagnostics.png        # the zoo's -tb folder",
        "  python -m sb3_ppo_variants.plot logs/ppo_kl logs/ppo_clip --output d.svg   # zoo run folders (trained with -tb)",
        "  python -m sb3_ppo_variants.plot runs/a runs/b --label PPOKL PPOClip --keys train/approx_kl --output d.png",
    ]
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m sb3_ppo_variants.plot``.

    :return: the parser
    """
    parser = argparse.ArgumentParser(
        prog="python -m sb3_ppo_variants.plot",
        description="Draw the shared diagnostics of several runs side by side per algorithm, seeds aggregated "
        "(mean and a band), from TensorBoard event files or SB3's progress.csv, and save the figure.",
        epilog=_help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "folders",
        nargs="+",
        type=Path,
        help="run folders (logs/ppo_kl/CartPole-v1_1), zoo log folders (logs/ppo_kl) or TensorBoard roots (logs/tb)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="figure file to write: .png, .svg or .pdf")
    parser.add_argument("-k", "--keys", nargs="+", help="keys or patterns to draw, one panel each (default: the shared set)")
    parser.add_argument(
        "-l", "--label", nargs="+", help="algorithm label per folder (default: from the zoo's or TensorBoard's layout)"
    )
    parser.add_argument("--band", choices=BANDS, default="minmax", help="band around the mean over runs (default: minmax)")
    parser.add_argument("--columns", type=int, default=3, help="panels per row (default: 3)")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--dpi", type=int, default=120, help="resolution of a PNG (default: 120)")
    return parser


def main(argv: Sequence[str] | None = None) -> Figure:
    """Run the plot command.

    :param argv: the command line without the program name (default: ``sys.argv[1:]``)
    :return: the figure written
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        _require_extras()
        if args.label is not None and len(args.label) != len(args.folders):
            raise PlotError(f"--label: give one label per folder ({len(args.folders)}), got {len(args.label)}")
        labels = args.label or [None] * len(args.folders)
        runs = [
            run
            for folder, label in zip(args.folders, labels, strict=True)
            for run in find_runs(folder, label, argument=f"folders ({folder})")
        ]
        figure = plot_runs(runs, keys=args.keys, band=args.band, columns=args.columns, title=args.title)
        save_figure(figure, args.output, dpi=args.dpi)
    except (PlotError, ImportError) as error:
        parser.error(str(error))
    groups = _groups(runs)
    print(f"wrote {args.output}: {len(figure.axes)} panels, " + ", ".join(f"{n} ({len(r)} runs)" for n, r in groups.items()))
    return figure


if __name__ == "__main__":
    main(sys.argv[1:])
