"""rl-zoo3 integration: the start-up hook, register(), hyperparameter files and what backs their `# Tuned` marks,
and the unchanged zoo commands.

The tests that start a Python subprocess (the hook at start-up, the zoo commands) are marked ``integration``.
"""

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import optuna
import pytest
import torch as th
import yaml

import sb3_ppo_variants.zoo
from sb3_ppo_variants.zoo import ZOO_ALGOS, algorithm_class, hyperparams_dir, hyperparams_file, register
from sb3_ppo_variants.zoo.samplers import CONVERTERS, SAMPLERS

integration = pytest.mark.integration  # starts a subprocess

# keys of a zoo entry that rl-zoo3 consumes itself instead of passing them to the algorithm
ZOO_ONLY_KEYS = {
    "n_envs",
    "n_timesteps",
    "normalize",
    "env_wrapper",
    "frame_stack",
    "callback",
    "vec_env_wrapper",
    "env_kwargs",
}


def run(args: list[str], cwd: Path, hook: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["SB3_PPO_VARIANTS_ZOO_HOOK"] = "1" if hook else "0"
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def last_evaluation(log_folder: Path, algo: str, env_id: str) -> float:
    """Mean return of the zoo's last evaluation (EvalCallback's evaluations.npz)."""
    (run_dir,) = sorted((log_folder / algo).glob(f"{env_id}_*"))
    evaluations = np.load(run_dir / "evaluations.npz")
    return float(evaluations["results"][-1].mean())


@integration
def test_startup_hook_imports_nothing_heavy(tmp_path):
    result = run(["-X", "importtime", "-c", "pass"], cwd=tmp_path)
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "_sb3_ppo_variants_zoo_hook" in imported, "the .pth hook is not installed"
    heavy = [
        m for m in imported if m.split(".")[0] in {"torch", "stable_baselines3", "sb3_contrib", "rl_zoo3", "sb3_ppo_variants"}
    ]
    assert heavy == []


@integration
@pytest.mark.parametrize("hook", [True, False])
def test_hook_registers_on_rl_zoo3_import_and_can_be_switched_off(tmp_path, hook):
    code = (
        f"ZOO = {sorted(ZOO_ALGOS)!r}; import rl_zoo3.utils as u, rl_zoo3.hyperparams_opt as h; "
        "print(sorted(set(u.ALGOS) & set(ZOO)), sorted(set(h.HYPERPARAMS_SAMPLER) & set(ZOO)))"
    )
    output = run(["-c", code], cwd=tmp_path, hook=hook).stdout.strip()
    registered = sorted(ZOO_ALGOS) if hook else []
    assert output == f"{registered} {registered}"


def test_hook_does_nothing_without_rl_zoo3(tmp_path):
    import _sb3_ppo_variants_zoo_hook as hook

    # rl_zoo3 not found on the given path: the finder steps aside, the import fails as usual
    assert hook.ZooRegistrationFinder().find_spec("rl_zoo3.utils", [str(tmp_path)]) is None
    assert hook.ZooRegistrationFinder().find_spec("numpy", None) is None


def test_register_patches_rl_zoo3_tables():
    register()
    register()  # idempotent
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
    from rl_zoo3.utils import ALGOS

    for key, (module, class_name) in ZOO_ALGOS.items():
        assert ALGOS[key] is algorithm_class(key)
        assert ALGOS[key].__name__ == class_name and ALGOS[key].__module__.startswith(module)
        assert HYPERPARAMS_SAMPLER[key] is SAMPLERS[key] and HYPERPARAMS_CONVERTER[key] is CONVERTERS[key]
    assert set(SAMPLERS) == set(CONVERTERS) == set(ZOO_ALGOS)
    assert "config" in inspect.signature(ExperimentManager.__init__).parameters


def test_optuna_sampler_covers_kl_settings():
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    study = optuna.create_study()
    trial = study.ask()
    kwargs = HYPERPARAMS_SAMPLER["ppo_kl"](trial, 2, 1, {})
    assert {"kl_target", "kl_coef", "kl_controller", "gamma", "policy_kwargs"} <= set(kwargs)
    assert "clip_range" not in kwargs
    assert HYPERPARAMS_CONVERTER["ppo_kl"](trial.params)["kl_controller"] == kwargs["kl_controller"]


def test_reinforce_sampler_samples_the_baseline_and_has_its_own_converter():
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    from sb3_ppo_variants import REINFORCE
    from sb3_ppo_variants.reinforce.baselines import BASELINES

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        kwargs = HYPERPARAMS_SAMPLER["reinforce"](trial, 2, 1, {})
        assert kwargs["baseline"] in BASELINES and "gae_lambda" not in kwargs
        assert HYPERPARAMS_CONVERTER["reinforce"](trial.params) == kwargs
        REINFORCE("MlpPolicy", "CartPole-v1", **kwargs)  # a valid configuration


def test_hyperparams_files_ship_inside_the_package():
    assert hyperparams_dir() == Path(sb3_ppo_variants.zoo.__file__).parent / "hyperparams"
    assert sorted(path.stem for path in hyperparams_dir().glob("*.yml")) == sorted(ZOO_ALGOS)
    with pytest.raises(ValueError, match="algo must be one of"):
        hyperparams_file("ppo")


@pytest.mark.parametrize("algo", list(ZOO_ALGOS))
def test_hyperparams_file_entries_are_valid(algo):
    path = hyperparams_file(algo)
    assert path.parent == hyperparams_dir()
    entries = yaml.safe_load(path.read_text())
    accepted = set(inspect.signature(algorithm_class(algo)).parameters)
    assert "default" in entries
    for env_id, entry in entries.items():
        assert "policy" in entry and "n_timesteps" in entry, env_id
        unknown = set(entry) - ZOO_ONLY_KEYS - accepted
        assert not unknown, f"{algo}.yml {env_id}: {unknown}"
        if env_id != "default":
            assert env_id in gym.envs.registry, env_id


@integration
def test_launcher_works_with_the_hook_off(tmp_path):
    run(
        [
            "-m",
            "sb3_ppo_variants.zoo",
            "train",
            "--algo",
            "ppo_kl",
            "--env",
            "CartPole-v1",
            "-n",
            "512",
            "-f",
            "logs",
            "--seed",
            "1",
        ],
        cwd=tmp_path,
        hook=False,
    )
    assert (tmp_path / "logs" / "ppo_kl" / "CartPole-v1_1" / "CartPole-v1.zip").is_file()


@integration
def test_optimize_with_sqlite_storage_then_enjoy(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "rl_zoo3.train", "--algo", "ppo_kl", "--env", "CartPole-v1", "-optimize", "--n-trials", "2"]
    args += ["--storage", storage, "--study-name", "s", "-n", "1000", "--n-evaluations", "1", "--seed", "0", "-f", "logs"]
    run(args, cwd=tmp_path)
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 2
    assert all(t.state.is_finished() for t in study.trials)
    assert "kl_controller" in study.trials[0].params


@integration
@pytest.mark.slow
@pytest.mark.parametrize("algo", list(ZOO_ALGOS))
def test_unchanged_zoo_train_reaches_475_on_cartpole(tmp_path, algo):
    run(["-m", "rl_zoo3.train", "--algo", algo, "--env", "CartPole-v1", "--seed", "0", "-f", "logs"], cwd=tmp_path)
    assert last_evaluation(tmp_path / "logs", algo, "CartPole-v1") >= 475
    # the budget is kept: the last update starts below it and collects at most one batch (REINFORCE: whole episodes, at
    # most 500 steps each, are finished beyond its n_steps, and with "sync" run to their end)
    entry = yaml.safe_load(hyperparams_file(algo).read_text())["CartPole-v1"]
    (run_dir,) = sorted((tmp_path / "logs" / algo).glob("CartPole-v1_*"))
    num_timesteps = algorithm_class(algo).load(run_dir / "CartPole-v1.zip").num_timesteps
    n_envs, budget = entry.get("n_envs", 1), int(entry["n_timesteps"])
    batch = entry["n_steps"] + 2 * 500 * n_envs if algo == "reinforce" else entry.get("n_steps", 2048) * n_envs
    assert budget <= num_timesteps < budget + batch
    # and the trained agent plays with the unchanged enjoy command
    result = run(
        ["-m", "rl_zoo3.enjoy", "--algo", algo, "--env", "CartPole-v1", "-f", "logs", "-n", "600", "--no-render"], cwd=tmp_path
    )
    assert "Mean reward" in result.stdout or "Atari" in result.stdout or result.returncode == 0
    if algo == "ppo_kl":
        resumed_step_stays_near_the_target(tmp_path, run_dir / "CartPole-v1.zip", entry["kl_target"])


def resumed_step_stays_near_the_target(folder: Path, model: Path, kl_target: float) -> None:
    """
    Resume PPOKL's shipped CartPole-v1 entry (learning rate annealed linearly to 0) with the zoo's ``-i``, which restarts
    the schedule: the first three updates stay within 3x kl_target. Without the hold on beta (kl_hold_lr_fraction=0)
    beta followed the learning rate down to its floor and the resumed updates had KL 0.8-4.9.
    """
    # 4 rollouts of 8 x 32 steps; SB3 logs an update's train/ values at the next rollout's end: three updates' KL
    args = ["-m", "rl_zoo3.train", "--algo", "ppo_kl", "--env", "CartPole-v1", "--seed", "1", "-f", "resumed"]
    result = run([*args, "-i", str(model), "-n", "1024", "--eval-freq", "-1"], cwd=folder)
    assert "Loading pretrained agent" in result.stdout
    kls = [float(value) for value in re.findall(r"\|\s+policy_kl\s+\|\s+(\S+)\s+\|", result.stdout)]
    assert len(kls) == 3, result.stdout[-3000:]
    assert max(kls) <= 3 * kl_target, kls


def test_launcher_help_lists_the_routes(capsys):
    from sb3_ppo_variants.zoo.__main__ import NOT_ROUTED, ROUTES, main

    main(["--help"])
    text = capsys.readouterr().out
    assert {"train", "enjoy", "record_video"} <= set(ROUTES)
    assert all(f"  {route} " in text for route in (*ROUTES, *NOT_ROUTED))
    with pytest.raises(SystemExit) as error:
        main(["benchmark"])
    assert error.value.code == 2
    assert "unknown route 'benchmark'" in capsys.readouterr().err


@integration
def test_launcher_help_exits_0_and_routes_record_video(tmp_path):
    result = run(["-m", "sb3_ppo_variants.zoo", "--help"], cwd=tmp_path, hook=False)
    assert "record_video" in result.stdout and "train" in result.stdout
    # a route's own --help is rl-zoo3's, with our keys registered (the hook is off)
    result = run(["-m", "sb3_ppo_variants.zoo", "record_video", "--help"], cwd=tmp_path, hook=False)
    assert "ppo_kl" in result.stdout and "--output-folder" in result.stdout


@pytest.mark.parametrize("algo", list(ZOO_ALGOS))
def test_samplers_sample_the_reference_term_only_when_a_reference_is_set(algo):
    from sb3_ppo_variants.zoo.samplers import ZOO_HYPERPARAMS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert not {"ref_kl_coef", "ref_kl_target"} & set(SAMPLERS[algo](study.ask(), 2, 1, {}))
    for controller, keys in (("fixed", {"ref_kl_coef"}), ("proportional", {"ref_kl_coef", "ref_kl_target"})):
        token = ZOO_HYPERPARAMS.set({"ref_policy": "model.zip", "ref_kl_controller": controller})
        try:
            trial = study.ask()
            kwargs = SAMPLERS[algo](trial, 2, 1, {})
        finally:
            ZOO_HYPERPARAMS.reset(token)
        assert {key for key in kwargs if key.startswith("ref_")} == keys
        assert 0 < kwargs["ref_kl_coef"] <= 1
        # rl-zoo3's --trial-id route gives them back
        converted = CONVERTERS[algo](trial.params)
        assert all(converted[key] == kwargs[key] for key in keys)


@integration
@pytest.mark.slow
def test_unchanged_zoo_command_fine_tunes_a_zoo_model_toward_it(tmp_path):
    """Train with the zoo, then fine-tune that model with ref_policy / init_from_ref given on the unchanged command."""
    from sb3_ppo_variants import PPOKL

    base = ["-m", "rl_zoo3.train", "--algo", "ppo_kl", "--env", "CartPole-v1", "-n", "256", "-f", "logs"]
    run([*base, "--seed", "1"], cwd=tmp_path)
    reference = "logs/ppo_kl/CartPole-v1_1/CartPole-v1.zip"
    params = ["-params", f"ref_policy:'{reference}'", "ref_kl_coef:0.1", "init_from_ref:'actor_critic'"]
    # two updates (8 environments x 32 steps each): SB3 prints the first one's logs before the second
    result = run([*base, "--seed", "2", "--verbose", "1", "-n", "512", *params], cwd=tmp_path)
    assert "ref_kl_reward" in result.stdout and "ref_kl " in result.stdout
    tuned = PPOKL.load(tmp_path / "logs/ppo_kl/CartPole-v1_2/CartPole-v1.zip")
    zoo_model = PPOKL.load(tmp_path / reference)
    assert tuned.ref_policy == reference and tuned.reference.kl_coef == 0.1
    for frozen, trained in zip(tuned.reference.policy.parameters(), zoo_model.policy.parameters(), strict=True):
        assert th.equal(frozen, trained)


@pytest.mark.parametrize("key", ["ppo_clip", "ppo_kl", "trpo_kl"])
def test_samplers_cover_the_package_knobs(key):
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for env_id, n_actions in (("Pendulum-v1", 1), ("CartPole-v1", 0)) * 4:
        trial = study.ask()
        kwargs = HYPERPARAMS_SAMPLER[key](trial, n_actions, 1, {})
        assert HYPERPARAMS_CONVERTER[key](trial.params) == kwargs
        assert isinstance(kwargs["truncation_as_terminal"], bool)
        # the std knobs only for continuous actions, inside policy_kwargs
        assert ("learn_std" in kwargs["policy_kwargs"]) == (n_actions > 0) and "learn_std" not in kwargs
        seen |= {(name, str(value)) for name, value in kwargs.items() if name in ("truncation_as_terminal", "kl_max")}
        seen |= {("learn_std", str(kwargs["policy_kwargs"].get("learn_std")))}
        algorithm_class(key)("MlpPolicy", env_id, **kwargs)  # a valid configuration
    assert {("truncation_as_terminal", "True"), ("truncation_as_terminal", "False"), ("learn_std", "False")} <= seen


@pytest.mark.parametrize("key", ["ppo_clip", "ppo_kl", "trpo_kl"])
def test_samplers_offer_no_fixed_std_to_a_gsde_entry(key):
    # a fixed std is the diagonal Gaussian's option: on an entry with use_sde (rl-zoo3's Pendulum-v1 entries) a
    # sampled learn_std=False made the trial's model raise at construction, a FAIL that ended the worker
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    from sb3_ppo_variants.zoo.samplers import ZOO_HYPERPARAMS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    token = ZOO_HYPERPARAMS.set({"use_sde": True, "sde_sample_freq": 4})
    try:
        for _ in range(6):
            trial = study.ask()
            kwargs = HYPERPARAMS_SAMPLER[key](trial, 1, 1, {})
            assert "learn_std" not in trial.params and "learn_std" not in kwargs["policy_kwargs"]
            assert "log_std_init" in kwargs["policy_kwargs"]
            algorithm_class(key)("MlpPolicy", "Pendulum-v1", use_sde=True, sde_sample_freq=4, **kwargs)
    finally:
        ZOO_HYPERPARAMS.reset(token)
    trial = study.ask()  # outside the gSDE entry's context, the fixed std is offered again
    HYPERPARAMS_SAMPLER[key](trial, 1, 1, {})
    assert "learn_std" in trial.params


# A `# Tuned` mark (docs/zoo.md): in the comment lines directly above an entry, `# Tuned: <figure>` and
# `# command: <command>`; the command is the full profile of the zoo table or one of the learning tests of this file
TUNED = re.compile(r"^#\s*Tuned\b")
FIELD = re.compile(r"^#\s*(Tuned|command):\s*(.*\S)\s*$")
ZOO_TABLE_FULL = "python -m benchmarks.zoo_table --profile full"
LEARNING_TEST = re.compile(r"pytest tests/test_zoo\.py::(\w+)\[(\w+)\]")


def tuned_marks(text: str) -> dict[str, list[str]]:
    """
    :param text: a hyperparameter file
    :return: the entries marked ``# Tuned``: entry id -> the comment lines directly above it (a ``# Tuned`` line
        anywhere else raises ``ValueError``)
    """
    marks, block = {}, []
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("#"):
            block.append(line)
            continue
        marked = any(TUNED.match(comment) for comment in block)
        entry = re.match(r"([^\s#][^:]*):", line)
        if marked and entry is None:
            raise ValueError(f"line {number - 1}: a # Tuned mark that is not directly above an entry")
        if marked and entry is not None:
            marks[entry.group(1)] = block
        block = []
    return marks


def tuning_problems(algo: str, env_id: str, block: list[str], full: Path | None = None) -> list[str]:
    """
    What keeps a ``# Tuned`` mark from being backed (nothing: backed). The mark names a figure (a number) and a
    command, and the command is one of:

    - the zoo table's full profile (``python -m benchmarks.zoo_table --profile full [--only ALGO:ENV]``): its committed
      ``results.json`` has the cell at the entry's budget (not capped) with >= 2 seeds, the figure contains its
      ``mean ± std`` as the report writes it, and its committed ``manifest.json`` ran every seed with the entry as the
      file has it now (an entry changed after its run is not backed);
    - a learning test of this file (``pytest tests/test_zoo.py::<test>[<algo>]``): marked ``slow``, parametrised with
      this algorithm, training this environment (with the unchanged zoo command, at the entry's budget), and asserting
      the figure's threshold (``>= <number>`` in both).

    :param full: the zoo table's full results (default: ``benchmarks/results/zoo_table/full``)
    """
    fields = dict(match.groups() for match in map(FIELD.match, block) if match)
    figure, command = fields.get("Tuned", ""), fields.get("command", "")
    if not re.search(r"\d", figure):
        return [f"{algo}/{env_id}: `# Tuned: <figure>` names no figure"]
    if command == ZOO_TABLE_FULL or command == f"{ZOO_TABLE_FULL} --only {algo}:{env_id}":
        return _zoo_table_problems(algo, env_id, figure, full)
    test = LEARNING_TEST.fullmatch(command)
    if test is None:
        return [f"{algo}/{env_id}: `# command:` is neither `{ZOO_TABLE_FULL}` nor `pytest tests/test_zoo.py::<test>[{algo}]`"]
    function = globals().get(test.group(1))
    if function is None:
        return [f"{algo}/{env_id}: no test {test.group(1)} in tests/test_zoo.py"]
    marks = getattr(function, "pytestmark", [])
    algos = [value for mark in marks if mark.name == "parametrize" and mark.args[0] == "algo" for value in mark.args[1]]
    source, threshold = inspect.getsource(function), re.search(r">= ?(-?[\d.]+)", figure)
    problems = []
    if not any(mark.name == "slow" for mark in marks) or test.group(2) != algo or algo not in algos:
        problems.append(f"{algo}/{env_id}: {test.group(0)} is not a slow learning test parametrised with {algo}")
    if f'"{env_id}"' not in source:
        problems.append(f"{algo}/{env_id}: {test.group(1)} does not train {env_id}")
    if threshold is None or not re.search(rf"assert .*>= ?{re.escape(threshold.group(1))}\b", source):
        problems.append(f"{algo}/{env_id}: the figure's threshold (>= <number>) is not what {test.group(1)} asserts")
    return problems


def _zoo_table_problems(algo: str, env_id: str, figure: str, full: Path | None) -> list[str]:
    from benchmarks import common, runner, zoo_table

    full = full or common.RESULTS / "zoo_table" / "full"
    results, manifest = full / "results.json", full / "manifest.json"
    if not results.exists() or not manifest.exists():
        return [f"{algo}/{env_id}: no committed results of the zoo table's full profile in {full}"]
    rows = [row for row in json.loads(results.read_text())["rows"] if (row["key"], row["env"]) == (algo, env_id)]
    if not rows or rows[0]["capped"] or len(rows[0]["seeds"]) < 2:
        return [f"{algo}/{env_id}: {results} has no finished cell at the entry's budget with >= 2 seeds"]
    row, problems = rows[0], []
    if f"{row['mean']:.1f} ± {row['std']:.1f}" not in figure:
        problems.append(f"{algo}/{env_id}: the figure is not the committed {row['mean']:.1f} ± {row['std']:.1f}")
    ran = {spec["run_id"]: spec for spec in json.loads(manifest.read_text())["specs"]}
    profile = {**zoo_table.PROFILES["full"], "envs": [env_id], "algos": [algo]}
    for spec in zoo_table.make_specs(profile):
        if spec.seed in row["seeds"] and not (
            spec.run_id in ran and runner.reusable(runner.spec_dict(spec), {"spec": ran[spec.run_id]})
        ):
            problems.append(f"{algo}/{env_id}: {spec.run_id} did not run the entry as the file has it now")
    return problems


@pytest.mark.parametrize("algo", list(ZOO_ALGOS))
def test_every_tuned_mark_is_backed_by_a_committed_run(algo):
    for env_id, block in tuned_marks(hyperparams_file(algo).read_text()).items():
        assert tuning_problems(algo, env_id, block) == []


def test_tuned_marks_are_checked(tmp_path):
    from benchmarks import runner, zoo_table

    text = "# header\n\n# from rl-zoo3\n# Tuned: 500.0 ± 0.0\n# command: x\nCartPole-v1:\n  n_envs: 8\n\nAcrobot-v1:\n  a: 1\n"
    assert tuned_marks(text) == {"CartPole-v1": ["# from rl-zoo3", "# Tuned: 500.0 ± 0.0", "# command: x"]}
    with pytest.raises(ValueError, match="line 3: a # Tuned mark"):
        tuned_marks("default:\n  a: 1\n# Tuned: 1\n\nCartPole-v1:\n")
    # the learning-test route
    test = "pytest tests/test_zoo.py::test_unchanged_zoo_train_reaches_475_on_cartpole"
    assert tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned: >= 475 (seed 0)", f"# command: {test}[ppo_kl]"]) == []
    assert len(tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned: >= 480", f"# command: {test}[ppo_kl]"])) == 1
    assert len(tuning_problems("ppo_kl", "Acrobot-v1", ["# Tuned: >= 475", f"# command: {test}[ppo_kl]"])) == 1
    assert len(tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned: >= 475", f"# command: {test}[trpo_kl]"])) == 1
    assert len(tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned", f"# command: {test}[ppo_kl]"])) == 1
    assert len(tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned: >= 475"])) == 1
    # the full-profile route: a committed cell with two seeds, its figure, the entry it ran
    command = "# command: python -m benchmarks.zoo_table --profile full --only ppo_kl:CartPole-v1"
    mark = ["# Tuned: 500.0 ± 0.0 (seeds 0, 1)", command]
    assert tuning_problems("ppo_kl", "CartPole-v1", mark, tmp_path) != []  # nothing committed
    profile = {**zoo_table.PROFILES["full"], "envs": ["CartPole-v1"], "algos": ["ppo_kl"]}
    specs = zoo_table.make_specs(profile)
    runs = {spec.run_id: {"spec": runner.spec_dict(spec), "wall_time_s": 1.0, "eval": {"mean": 500.0}} for spec in specs}
    result = zoo_table.summarise(runs, profile)
    (tmp_path / "results.json").write_text(json.dumps(result))
    (tmp_path / "manifest.json").write_text(json.dumps({"specs": [runner.spec_dict(spec) for spec in specs]}))
    assert tuning_problems("ppo_kl", "CartPole-v1", mark, tmp_path) == []
    assert len(tuning_problems("ppo_kl", "CartPole-v1", ["# Tuned: 499.0 ± 0.0", command], tmp_path)) == 1
    # the entry changed after the run
    changed = [runner.spec_dict(spec) for spec in specs]
    changed[0]["kwargs"]["kl_target"] = 0.02
    (tmp_path / "manifest.json").write_text(json.dumps({"specs": changed}))
    assert tuning_problems("ppo_kl", "CartPole-v1", mark, tmp_path) == [
        "ppo_kl/CartPole-v1: ppo_kl-CartPole-v1-s0 did not run the entry as the file has it now"
    ]
    # one seed
    (tmp_path / "results.json").write_text(json.dumps(zoo_table.summarise(dict(list(runs.items())[:1]), profile)))
    assert "with >= 2 seeds" in tuning_problems("ppo_kl", "CartPole-v1", mark, tmp_path)[0]
