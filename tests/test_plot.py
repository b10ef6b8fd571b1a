"""The diagnostics plot command (``python -m sb3_ppo_variants.plot``) on real logs of 2 algorithms x 2 seeds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.logger import configure

from sb3_ppo_variants import PPOKL, PPOClip
from sb3_ppo_variants.plot import (
    DEFAULT_KEYS,
    KNOWN_KEYS,
    PlotError,
    aggregate,
    find_runs,
    main,
    make_parser,
    plot_runs,
    read_progress_csv,
    read_tensorboard,
)

ALGOS = {"ppo_kl": PPOKL, "ppo_clip": PPOClip}
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def zoo_logs(tmp_path_factory) -> Path:
    """``logs/<algo>/CartPole-v1_<seed>`` with TensorBoard events and progress.csv, 4 updates per run."""
    root = tmp_path_factory.mktemp("plot") / "logs"
    for key, algorithm in ALGOS.items():
        for seed in SEEDS:
            model = algorithm(
                "MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=dict(net_arch=[16]), seed=seed
            )
            model.set_logger(configure(str(root / key / f"CartPole-v1_{seed}"), ["csv", "tensorboard"]))
            model.learn(256)
    return root


def test_figure_from_two_algorithms_and_two_seeds(zoo_logs, tmp_path):
    output = tmp_path / "figure" / "diagnostics.png"
    figure = main([str(zoo_logs), "--output", str(output), "--dpi", "60"])
    # one panel per default key present: PPOKL logs kl_coef, both log the ratio statistics; grad_variance is
    # REINFORCE's (absent: left out)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == [
        "rollout/ep_rew_mean",
        "train/policy_kl",
        "train/kl_coef",
        "train/ratio_max",
        "train/ratio_mean",
        "train/ratio_min",
        "train/ratio_std",
        "train/ess",
        "train/grad_snr",
    ]
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(output)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    # both algorithms on a shared panel, each aggregated over its two seeds; kl_coef only for PPOKL
    policy_kl = figure.axes[1]
    assert sorted(line.get_label() for line in policy_kl.get_lines()) == ["ppo_clip (2)", "ppo_kl (2)"]
    assert [line.get_label() for line in figure.axes[2].get_lines()] == ["ppo_kl (2)"]
    assert len(policy_kl.collections) == 2  # the min-max bands


def test_runs_are_grouped_by_the_zoo_layout_and_read_from_tensorboard(zoo_logs):
    runs = find_runs(zoo_logs)
    assert sorted((run.label, run.path.name) for run in runs) == [
        ("ppo_clip", "CartPole-v1_1"),
        ("ppo_clip", "CartPole-v1_2"),
        ("ppo_kl", "CartPole-v1_1"),
        ("ppo_kl", "CartPole-v1_2"),
    ]
    assert all(run.env == "CartPole-v1" for run in runs)
    steps, values = runs[0].scalars["train/policy_kl"]
    # SB3 dumps the train/ keys of an update with the next rollout: the last update is never dumped
    assert list(steps) == [128, 192, 256] and np.all(values > 0)


def test_zoo_run_folders_find_their_tensorboard_runs_through_args_yml(zoo_logs, tmp_path):
    # rl-zoo3 with -tb: logs/<algo>/<env>_<n>/<env>/args.yml records the -tb folder; the TensorBoard run is
    # tb/<env>/<TbLogName>_<k>, k counted independently of n: the run that started closest in time is taken
    events = {seed: next((zoo_logs / "ppo_kl" / f"CartPole-v1_{seed}").glob("events.out.tfevents.*")) for seed in SEEDS}
    for seed, k, started in ((1, 2, 1000.0), (2, 1, 2000.0)):
        params = tmp_path / "logs" / "ppo_kl" / f"CartPole-v1_{seed}" / "CartPole-v1"
        params.mkdir(parents=True)
        args = OrderedDict([("algo", "ppo_kl"), ("env", "CartPole-v1"), ("tensorboard_log", str(tmp_path / "tb"))])
        (params / "args.yml").write_text(yaml.dump(args))
        os.utime(params / "args.yml", (started, started))
        tensorboard_run = tmp_path / "tb" / "CartPole-v1" / f"PPOKL_{k}"
        tensorboard_run.mkdir(parents=True)
        # the event file's name carries its creation time (SummaryWriter: events.out.tfevents.<time>.<host>.<pid>.<n>)
        (tensorboard_run / f"events.out.tfevents.{int(started) + 3}.host.1.0").write_bytes(events[seed].read_bytes())
    # another algorithm's run, started closer in time, is not taken
    other = tmp_path / "tb" / "CartPole-v1" / "PPOClip_1"
    other.mkdir()
    (other / "events.out.tfevents.1001.host.1.0").write_bytes(events[1].read_bytes())
    runs = find_runs(tmp_path / "logs" / "ppo_kl")
    assert [(run.label, run.path.name) for run in runs] == [("ppo_kl", "CartPole-v1_1"), ("ppo_kl", "CartPole-v1_2")]
    for run, seed in zip(runs, SEEDS, strict=True):
        expected = read_tensorboard(zoo_logs / "ppo_kl" / f"CartPole-v1_{seed}")["train/policy_kl"]
        np.testing.assert_array_equal(run.scalars["train/policy_kl"][1], expected[1])


def test_progress_csv_gives_the_same_curves_as_tensorboard(zoo_logs):
    folder = zoo_logs / "ppo_kl" / "CartPole-v1_1"
    from_csv, from_events = read_progress_csv(folder / "progress.csv"), read_tensorboard(folder)
    for key in ("train/policy_kl", "train/kl_coef", "train/ess", "rollout/ep_rew_mean"):
        np.testing.assert_array_equal(from_csv[key][0], from_events[key][0])
        np.testing.assert_allclose(from_csv[key][1], from_events[key][1], rtol=1e-6)  # events store float32


def test_csv_only_folder_and_explicit_labels_and_svg(zoo_logs, tmp_path):
    csv_run = tmp_path / "runs" / "a"
    csv_run.mkdir(parents=True)
    (csv_run / "progress.csv").write_bytes((zoo_logs / "ppo_kl" / "CartPole-v1_2" / "progress.csv").read_bytes())
    output = tmp_path / "d.svg"
    figure = main([str(csv_run), str(zoo_logs / "ppo_clip"), "-l", "mine", "clip", "-k", "train/approx_kl", "-o", str(output)])
    assert [axes.get_title() for axes in figure.axes] == ["train/approx_kl"]
    assert sorted(line.get_label() for line in figure.axes[0].get_lines()) == ["clip (2)", "mine (1)"]
    assert output.read_text().lstrip().startswith("<?xml")


def test_keys_patterns_and_bands(zoo_logs):
    runs = find_runs(zoo_logs)
    figure = plot_runs(runs, keys=["train/ratio_m*", "train/approx_kl"], band="std", columns=2)
    assert [axes.get_title() for axes in figure.axes] == [
        "train/ratio_max",
        "train/ratio_mean",
        "train/ratio_min",
        "train/approx_kl",
    ]


def test_aggregate_mean_and_band_on_the_common_steps():
    curves = [(np.array([0.0, 10, 20]), np.array([1.0, 2, 3])), (np.array([0.0, 10, 20, 30]), np.array([3.0, 4, 5, 6]))]
    steps, mean, lower, upper = aggregate(curves, "minmax")
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_array_equal(mean, [2, 3, 4])
    np.testing.assert_array_equal(lower, [1, 2, 3])
    np.testing.assert_array_equal(upper, [3, 4, 5])
    _, mean, lower, upper = aggregate(curves, "std")
    np.testing.assert_array_equal(upper - mean, [1, 1, 1])


def test_errors_name_the_argument(zoo_logs, tmp_path, capsys):
    with pytest.raises(PlotError, match=r"^folders: no TensorBoard event files or progress.csv under"):
        find_runs(tmp_path)
    with pytest.raises(PlotError, match=r"^--keys: 'train/nope' is in none of the runs' logs"):
        plot_runs(find_runs(zoo_logs), keys=["train/nope"])
    with pytest.raises(SystemExit):
        main([str(zoo_logs), "-k", "train/nope", "-o", str(tmp_path / "x.png")])
    assert "--keys: 'train/nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(zoo_logs), "-l", "a", "b", "-o", str(tmp_path / "x.png")])
    assert "--label: give one label per folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(zoo_logs), "-o", str(tmp_path / "x.jpg")])
    assert "--output must end in .png, .svg or .pdf" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_help_lists_the_known_keys_with_their_meaning():
    text = make_parser().format_help()
    for key, meaning in KNOWN_KEYS.items():
        assert key in text and meaning.split()[0] in text
    assert all(key in text for key in DEFAULT_KEYS)


def test_missing_extra_names_the_extra(monkeypatch, zoo_logs):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    with pytest.raises(ImportError, match=r"sb3-ppo-variants\[zoo\]"):
        read_tensorboard(zoo_logs / "ppo_kl" / "CartPole-v1_1")


@pytest.mark.integration
def test_command_line_and_import_light_package(zoo_logs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys, sb3_ppo_variants; print('sb3_ppo_variants.plot' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.split() == ["False"]
    help_run = subprocess.run(
        [sys.executable, "-m", "sb3_ppo_variants.plot", "--help"], capture_output=True, text=True, env=env
    )
    assert help_run.returncode == 0 and "train/policy_kl" in help_run.stdout
    output = tmp_path / "d.png"
    result = subprocess.run(
        [sys.executable, "-m", "sb3_ppo_variants.plot", str(zoo_logs), "-o", str(output)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert output.is_file() and "ppo_kl (2 runs)" in result.stdout
