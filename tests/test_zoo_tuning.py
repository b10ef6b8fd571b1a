"""``benchmarks.zoo_tuning``: one entry tuned with rl-zoo3's unchanged ``-optimize`` workers, resumed, reported."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from benchmarks import zoo_tuning
from benchmarks.common import zoo_kwargs
from sb3_ppo_variants.zoo import algorithm_class
from sb3_ppo_variants.zoo.tuning import load_storage

TINY = ["--pruner", "none", "--budget", "2048", "--evaluations", "1", "--eval-episodes", "2", "--startup-trials", "1"]


def states(out_dir) -> list[str]:
    return [trial["state"] for trial in json.loads((out_dir / "results.json").read_text())["trials"]]


@pytest.mark.integration
def test_a_tuning_resumes_and_writes_the_entry_its_best_trial_ran(tmp_path):
    out = tmp_path / "study"
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "2", *TINY, "--output", str(out)])
    assert states(out) == ["COMPLETE", "COMPLETE"]
    result = json.loads((out / "results.json").read_text())
    best = max(result["trials"], key=lambda trial: trial["value"])
    assert result["chosen"]["number"] == best["number"]
    # entry.yml is the file's entry with the trial's keyword arguments on top, as rl-zoo3's objective builds it
    entry = yaml.safe_load((out / "entry.yml").read_text())["CartPole-v1"]
    expected = zoo_tuning.trial_entry("ppo_kl", "CartPole-v1", best["params"])
    assert entry.keys() == expected.keys()
    kwargs, expected_kwargs = zoo_kwargs(entry), zoo_kwargs(expected)
    assert repr(kwargs.pop("policy_kwargs")) == repr(expected_kwargs.pop("policy_kwargs"))
    assert kwargs == expected_kwargs  # exact: floats written with their round-trip repr
    algorithm_class("ppo_kl")("MlpPolicy", "CartPole-v1", **kwargs)  # a valid entry
    assert f"| {best['number']} | COMPLETE |" in (out / "results.md").read_text()

    # a killed run's trial stays RUNNING; the next run fails it and runs the trials still missing
    study = optuna.load_study(study_name="ppo_kl-CartPole-v1", storage=load_storage(str(out / "study.log")))
    study.ask()
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--trials", "3", *TINY, "--output", str(out)])
    assert states(out) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    # --trial: another trial's entry; --report-only reads the stored study and settings
    zoo_tuning.main(["--cell", "ppo_kl:CartPole-v1", "--report-only", "--trial", "0", "--output", str(out)])
    result = json.loads((out / "results.json").read_text())
    assert result["chosen"]["number"] == 0 and result["settings"]["budget"] == 2048
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cell", "ppo:CartPole-v1"], "--cell's algorithm must be one of"),
        (["--cell", "ppo_kl"], "--cell must be <algo>:<env>"),
        (["--cell", "reinforce:Hopper-v5"], "reinforce.yml has no entry 'Hopper-v5' to tune; its entries: Acrobot-v1,"),
        (["--cell", "ppo_kl:CartPole-v1", "--trials", "0"], "--trials must be >= 1"),
        (["--cell", "ppo_kl:CartPole-v1", "--report-only"], "--report-only: no study in"),
    ],
)
def test_bad_arguments_are_named_before_anything_runs(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        zoo_tuning.main([*argv, "--output", str(tmp_path / "none")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
