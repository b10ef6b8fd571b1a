"""``benchmarks.zoo_tuning``: one entry tuned with rl-zoo3's unchanged ``-optimize`` workers, resumed, reported."""

from __future__ import annotations

import argparse
import json
import os

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchmarks import zoo_tuning
from benchmarks.common import zoo_entry, zoo_kwargs
from sb3_ppo_variants.zoo import algorithm_class, register
from sb3_ppo_variants.zoo.registration import hyperparams_file
from sb3_ppo_variants.zoo.samplers import ZOO_HYPERPARAMS
from sb3_ppo_variants.zoo.tuning import load_storage

TINY = ["--pruner", "none", "--budget", "2048", "--evaluations", "1", "--eval-episodes", "2", "--startup-trials", "1"]


def states(out_dir) -> list[str]:
    return [trial["state"] for trial in json.loads((out_dir / "results.json").read_text())["trials"]]


@pytest.mark.integration
def test_a_tuning_resumes_and_writes_the_entry_its_best_trial_ran(tmp_path, capsys):
    out = tmp_path / "study"
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "2", *TINY, "--output", str(out)])
    assert states(out) == ["COMPLETE", "COMPLETE"]
    result = json.loads((out / "results.json").read_text())
    best = max(result["trials"], key=lambda trial: trial["value"])
    assert result["chosen"]["number"] == best["number"]
    # entry.yml is the file's entry with the trial's keyword arguments on top, as rl-zoo3's objective builds it
    entry = yaml.safe_load((out / "entry.yml").read_text())["CartPole-v1"]
    expected = zoo_tuning.trial_entry("ppo_kl", zoo_entry("ppo_kl", "CartPole-v1"), best["params"])
    assert entry.keys() == expected.keys()
    kwargs, expected_kwargs = zoo_kwargs(entry), zoo_kwargs(expected)
    assert repr(kwargs.pop("policy_kwargs")) == repr(expected_kwargs.pop("policy_kwargs"))
    assert kwargs == expected_kwargs  # exact: floats written with their round-trip repr
    algorithm_class("ppo_kl")("MlpPolicy", "CartPole-v1", **kwargs)  # a valid entry
    assert f"| {best['number']} | COMPLETE |" in (out / "results.md").read_text()

    tuning = json.loads((out / "tuning.json").read_text())
    assert tuning["launches"] == [{"trials_before": 0, "seeds": [0]}] and tuning["entry"] == zoo_entry("ppo_kl", "CartPole-v1")

    # a resume with other settings, or after the entry changed, is refused before any worker starts
    for argv, message in (
        (["--budget", "4096"], "the study was started with --budget 2048"),
        (["--pruner", "median"], "the study was started with --pruner none"),
    ):
        with pytest.raises(SystemExit):
            zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "3", *TINY, *argv, "--output", str(out)])
        assert message in capsys.readouterr().err
    edited = {**tuning, "entry": {**tuning["entry"], "n_steps": 64}}
    (out / "tuning.json").write_text(json.dumps(edited))
    with pytest.raises(SystemExit):
        zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "3", *TINY, "--output", str(out)])
    assert "CartPole-v1 entry changed since the study started" in capsys.readouterr().err
    (out / "tuning.json").write_text(json.dumps(tuning))
    assert states(out) == ["COMPLETE", "COMPLETE"]

    # a killed run's trial stays RUNNING; the next run fails it, runs the trials still missing, with new seeds
    study = optuna.load_study(study_name="ppo_kl-CartPole-v1", storage=load_storage(str(out / "study.log")))
    study.ask()
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "3", *TINY, "--output", str(out)])
    assert states(out) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    launches = json.loads((out / "tuning.json").read_text())["launches"]
    assert launches[1] == {"trials_before": 3, "seeds": [3]}  # seed 0 again would redraw trial 0's parameters
    params = [trial["params"] for trial in json.loads((out / "results.json").read_text())["trials"]]
    assert params[3] != params[0]
    # --trial: another trial's entry; --report-only reads the stored study and settings
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--report-only", "--trial", "0", "--output", str(out)])
    result = json.loads((out / "results.json").read_text())
    assert result["chosen"]["number"] == 0 and result["settings"]["budget"] == 2048
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    # a trial stopped before its parameters were sampled has no entry: said, nothing rewritten
    with pytest.raises(SystemExit, match="--trial 2 \\(FAIL\\) stopped before sampling every parameter"):
        zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--report-only", "--trial", "2", "--output", str(out)])
    assert json.loads((out / "results.json").read_text()) == result


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cell", "ppo:CartPole-v1"], "--cell's algorithm must be one of"),
        (["--cell", "ppo_kl"], "--cell must be <algo>:<env>"),
        (["--cell", "reinforce:Hopper-v5"], "reinforce.yml has no entry 'Hopper-v5' to tune; its entries: Acrobot-v1,"),
        (["--cell", "ppo_kl:CartPole-v1", "--trials", "0"], "--trials must be >= 1"),
        (["--cell", "ppo_kl:CartPole-v1", "--seed", "-1"], "--seed must be >= 0"),
        (["--cell", "ppo_kl:CartPole-v1", "--report-only"], "--report-only: no study in"),
    ],
)
def test_bad_arguments_are_named_before_anything_runs(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        zoo_tuning.main([*argv, "--output", str(tmp_path / "none")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def preprocessed(algo: str, env_id: str, config: str, tmp_path) -> tuple[dict, dict]:
    """:return: rl-zoo3's hyperparameters of ``env_id`` in ``config`` after its preprocessing, and VecNormalize's kwargs"""
    from rl_zoo3.exp_manager import ExperimentManager

    manager = ExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path / "logs"), config=config, verbose=0)
    hyperparams, _ = manager.read_hyperparameters()
    return manager._preprocess_hyperparams(hyperparams)[0], manager.normalize_kwargs


def comparable(kwargs: dict) -> dict:
    """schedules as their value at the start (rl-zoo3 wraps a float learning rate in a constant schedule)"""
    return {key: value(1.0) if callable(value) and not isinstance(value, type) else value for key, value in kwargs.items()}


@pytest.mark.parametrize(("algo", "env_id"), [("ppo_kl", "Pendulum-v1"), ("ppo_kl", "Hopper-v5"), ("trpo_kl", "Acrobot-v1")])
def test_the_entry_trains_with_what_rl_zoo3s_objective_built_for_the_trial(algo, env_id, tmp_path):
    # the objective: the file's entry preprocessed once, then kwargs.update(sampled); the entry: read and preprocessed
    register()
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    config = str(hyperparams_file(algo))
    file_kwargs, file_normalize = preprocessed(algo, env_id, config, tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for number in range(4):
        trial = study.ask()
        token = ZOO_HYPERPARAMS.set(dict(file_kwargs))  # as the patched objective does
        try:
            sampled = HYPERPARAMS_SAMPLER[algo](trial, 1 if env_id != "Acrobot-v1" else 0, 1, {})
        finally:
            ZOO_HYPERPARAMS.reset(token)
        objective = {**file_kwargs, **sampled}
        entry = zoo_tuning.trial_entry(algo, zoo_entry(algo, env_id), trial.params)
        (tmp_path / f"entry{number}.yml").write_text(zoo_tuning.entry_yaml(env_id, entry))
        written, normalize = preprocessed(algo, env_id, str(tmp_path / f"entry{number}.yml"), tmp_path)
        assert repr(written.pop("policy_kwargs")) == repr(objective.pop("policy_kwargs"))
        assert comparable(written) == comparable(objective)
        # the one difference: VecNormalize's gamma (the file's in the trial, the entry's from the entry)
        assert {k: v for k, v in normalize.items() if k != "gamma"} == {
            k: v for k, v in file_normalize.items() if k != "gamma"
        }
        if file_normalize:
            assert normalize["gamma"] == objective["gamma"]


def test_a_second_run_on_a_study_is_refused_while_the_first_is_alive(tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "workers.pid").write_text(str(os.getpid()))  # alive: this process
    with pytest.raises(SystemExit):
        zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", *TINY, "--output", str(out)])
    assert f"a tuning of {out} is running (pids [{os.getpid()}]" in capsys.readouterr().err
    assert not (out / "tuning.json").exists()


@pytest.mark.integration
def test_an_enqueued_trial_runs_first_once_and_bad_ones_are_refused_before_any_worker(tmp_path, capsys):
    out = tmp_path / "study"
    given = "kl_target=0.005,n_epochs=5,kl_controller=adaptive,kl_rule=rllib"
    argv = ["--cell", "ppo_kl:CartPole-v1", *TINY, "--output", str(out), "--enqueue", given]
    zoo_tuning.main(["--trials", "1", *argv])
    (trial,) = json.loads((out / "results.json").read_text())["trials"]
    assert trial["state"] == "COMPLETE" and trial["enqueued"]
    assert {name: trial["params"][name] for name in zoo_tuning.parse_params(given)} == zoo_tuning.parse_params(given)
    assert "| 0 (enqueued) | COMPLETE |" in (out / "results.md").read_text()
    # the same command again: the trial is in the study, not enqueued a second time; the new trial is sampled
    zoo_tuning.main(["--trials", "2", *argv])
    trials = json.loads((out / "results.json").read_text())["trials"]
    assert [t["enqueued"] for t in trials] == [True, False]
    assert json.loads((out / "tuning.json").read_text())["launches"][1]["enqueued"] == []
    # a value outside the sampler's choices, a name it does not sample (here: with a fixed controller): refused
    for bad, message in (
        ("n_epochs=4", "n_epochs=4 is outside the ppo_kl sampler's [1, 5, 10, 20]"),
        ("kl_controller=fixed,kl_rule=rllib", "kl_rule not sampled by the ppo_kl sampler for CartPole-v1"),
        ("clip_range=0.2", "clip_range not sampled"),
        ("kl_target", "--enqueue takes NAME=VALUE,NAME=VALUE"),
    ):
        with pytest.raises(SystemExit):
            zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "3", *TINY, "--output", str(out), "--enqueue", bad])
        assert message in capsys.readouterr().err
    assert len(json.loads((out / "tuning.json").read_text())["launches"]) == 2  # no worker started
    study = optuna.load_study(study_name="ppo_kl-CartPole-v1", storage=load_storage(str(out / "study.log")))
    assert len(study.trials) == 2
