"""Strategy choice: the auto rule, grid guards, trial budgets, and grid search against scikit-learn."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.model_selection import GridSearchCV

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo._errors import ConfigError
from mlflow_hpo.spaces import Param, SearchSpace, parse_space
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.strategy import RANDOM_MIN_TRIALS, choose_strategy, trial_budget
from mlflow_hpo.study import plan

FAST = {"model": "logistic_regression", "cv": "stratified", "n_folds": 3, "register_model": ""}

SMALL = {"params": {"C": {"choices": [0.01, 0.1, 1.0, 10.0]}, "class_weight": {"choices": [None, "balanced"]}}}
MEDIUM = {
    "params": {
        "C": {"type": "float", "low": 0.01, "high": 1.0, "step": 0.01},
        "class_weight": {"choices": [None, "balanced"]},
    }
}
LARGE = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}}


def _space(spec: dict[str, Any]) -> SearchSpace:
    return parse_space(spec)


def _write(path: Path, content: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("spec", "expected", "reason"),
    [
        (SMALL, "grid", r"auto chose grid: 8 combinations over 2 parameters, so every combination runs once"),
        (MEDIUM, "random", r"auto chose random: 200 combinations over 2 parameters \(estimated trial cost 5 fits on 400 rows\)"),
        (LARGE, "tpe", r"auto chose tpe: a continuous space over 1 parameters .* too large to enumerate"),
    ],
)
def test_auto_picks_by_space_size(spec: dict[str, Any], expected: str, reason: str) -> None:
    strategy = choose_strategy(TuneConfig(), _space(spec), n_rows=400, n_splits=5)

    assert strategy.name == expected
    assert re.search(reason, strategy.reason)


def test_auto_random_needs_at_least_100_trials() -> None:
    strategy = choose_strategy(TuneConfig(), _space(MEDIUM), n_rows=400, n_splits=5)

    assert strategy.min_trials == RANDOM_MIN_TRIALS
    assert isinstance(strategy.sampler, optuna.samplers.RandomSampler)


def test_auto_prefers_tpe_for_expensive_trials() -> None:
    strategy = choose_strategy(TuneConfig(), _space(MEDIUM), n_rows=1_000_000, n_splits=5)

    assert strategy.name == "tpe"
    assert "makes 100 random trials expensive" in strategy.reason


def test_auto_never_grids_more_than_four_params() -> None:
    spec = {"params": {f"p{i}": {"choices": [True, False]} for i in range(5)}}

    strategy = choose_strategy(TuneConfig(), _space(spec))

    assert strategy.name == "random"


def test_auto_never_grids_conditional_space() -> None:
    spec = {
        "params": {
            "solver": {"choices": ["lbfgs", "liblinear"]},
            "scaling": {"type": "float", "low": 1, "high": 2, "step": 1, "when": {"solver": "liblinear"}},
        }
    }

    strategy = choose_strategy(TuneConfig(), _space(spec))

    assert strategy.name == "random"


def test_tpe_is_multivariate_and_seeded() -> None:
    strategy = choose_strategy(TuneConfig(strategy="tpe", seed=7), _space(LARGE))

    assert isinstance(strategy.sampler, optuna.samplers.TPESampler)
    assert strategy.sampler._multivariate
    assert strategy.reason.startswith("strategy=tpe requested")


def test_grid_over_five_params_rejected() -> None:
    spec = {"params": {f"p{i}": {"choices": [True, False]} for i in range(5)}}

    with pytest.raises(ConfigError, match=r"strategy=grid over 5 parameters \(32 combinations\).*use strategy=random or strategy=tpe"):
        choose_strategy(TuneConfig(strategy="grid"), _space(spec))


def test_grid_over_continuous_range_rejected() -> None:
    with pytest.raises(ConfigError, match=r"strategy=grid needs a finite set of values, but C is a continuous range; add step"):
        choose_strategy(TuneConfig(strategy="grid"), _space(LARGE))


def test_grid_over_conditional_space_rejected() -> None:
    spec = {
        "params": {
            "solver": {"choices": ["lbfgs", "liblinear"]},
            "scaling": {"type": "int", "low": 1, "high": 2, "when": {"solver": "liblinear"}},
        }
    }

    with pytest.raises(ConfigError, match=r"cannot enumerate conditional parameters \(liblinear_scaling\)"):
        choose_strategy(TuneConfig(strategy="grid"), _space(spec))


def test_wide_uniform_range_warns_to_use_log() -> None:
    space = SearchSpace((Param("C", "float", 0.001, 100.0),))

    with pytest.warns(UserWarning, match=r"parameter C is sampled uniformly over \[0.001, 100\].*set log: true"):
        choose_strategy(TuneConfig(strategy="tpe"), space)


def test_narrow_uniform_range_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    choose_strategy(TuneConfig(strategy="tpe"), SearchSpace((Param("subsample", "float", 0.5, 1.0),)))

    assert not [w for w in recwarn if "log: true" in str(w.message)]


def test_budget_raised_for_auto_random(caplog: pytest.LogCaptureFixture) -> None:
    strategy = choose_strategy(TuneConfig(), _space(MEDIUM), n_rows=400, n_splits=5)

    with caplog.at_level(logging.INFO, logger="mlflow_hpo.strategy"):
        budget = trial_budget(30, strategy)

    assert budget == 100
    assert "Running 100 trials instead of n_trials=30" in caplog.text


def test_budget_kept_for_requested_random() -> None:
    strategy = choose_strategy(TuneConfig(strategy="random"), _space(MEDIUM))

    assert trial_budget(30, strategy) == 30


def test_budget_of_grid_is_grid_size() -> None:
    strategy = choose_strategy(TuneConfig(strategy="grid"), _space(SMALL))

    assert trial_budget(30, strategy) == 8
    assert trial_budget(3, strategy) == 8
    assert trial_budget(None, strategy) is None


def _study(study_name: str) -> optuna.Study:
    storage = open_storage(storage_url(mlflow.get_tracking_uri()))
    return optuna.load_study(study_name=study_name, storage=storage)


@pytest.mark.slow
def test_grid_scores_match_gridsearchcv(tmp_path: Path) -> None:
    config = TuneConfig(
        model="logistic_regression",
        strategy="grid",
        cv="stratified",
        n_folds=5,
        n_trials=30,
        space=_write(tmp_path / "grid.yaml", {**SMALL, "fixed": {"max_iter": 2000}}),
        study_name="grid-vs-sklearn",
        register_model="",
    )
    tune(config)
    trials = _study("grid-vs-sklearn").get_trials(states=(optuna.trial.TrialState.COMPLETE,))

    job = plan(config)
    search = GridSearchCV(
        job.adapter.build(dict(job.space.fixed), job.context),
        {"model__C": [0.01, 0.1, 1.0, 10.0], "model__class_weight": [None, "balanced"]},
        scoring=job.objective.scorer,
        cv=job.splitter.splitter,
    )
    search.fit(job.dataset.X_train, job.dataset.y_train)
    expected = {
        (params["model__C"], params["model__class_weight"]): score
        for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True)
    }

    assert len(trials) == 8
    assert {(t.params["C"], t.params["class_weight"]) for t in trials} == set(expected)
    for trial in trials:
        assert trial.value == pytest.approx(expected[(trial.params["C"], trial.params["class_weight"])], abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("spec", "expected", "n_trials"),
    [(SMALL, "grid", 8), (MEDIUM, "random", RANDOM_MIN_TRIALS), (LARGE, "tpe", 3)],
)
def test_auto_reason_in_tags_and_summary(
    spec: dict[str, Any], expected: str, n_trials: int, tmp_path: Path, client: MlflowClient
) -> None:
    config = TuneConfig(space=_write(tmp_path / "space.yaml", spec), n_trials=3, data="sklearn:iris", **FAST)

    result = tune(config)

    tags = client.get_run(result.parent_run_id).data.tags
    assert tags["mlflow_hpo.strategy"] == expected
    assert tags["mlflow_hpo.strategy_reason"].startswith(f"auto chose {expected}: ")
    summary = Path(client.download_artifacts(result.parent_run_id, "summary.md", str(tmp_path))).read_text()
    assert f"{tags['mlflow_hpo.strategy_reason']}" in summary
    assert sum(result.n_trials_by_state.values()) == n_trials


@pytest.mark.slow
def test_strategy_benchmark_quick_mode(tmp_path: Path) -> None:
    from benchmarks import bench_strategies

    assert bench_strategies.main(["--quick", "--output", str(tmp_path)]) == 0

    table = (tmp_path / "strategies.md").read_text()
    assert "| dataset | TPE, 3 trials | random, 5 trials |" in table
    for name in ("breast_cancer", "diabetes", "penguins"):
        assert f"| {name} (" in table
    results = json.loads((tmp_path / "strategies.json").read_text())
    assert results["budget"]["seeds"] == [0]
    assert len(results["datasets"]["diabetes"]["seeds"]) == 1


def test_random_samples_log_ranges_log_uniformly() -> None:
    space = SearchSpace((Param("C", "float", 1e-4, 1e4, log=True),))
    strategy = choose_strategy(TuneConfig(strategy="random", seed=0), space)
    study = optuna.create_study(sampler=strategy.sampler)

    values = []
    for _ in range(400):
        trial = study.ask()
        values.append(space.suggest(trial)["C"])
        study.tell(trial, 0.0)

    below_one = sum(1 for value in values if value < 1.0)
    # Log-uniform over 8 decades puts half the draws below 1; uniform would put almost none there.
    assert 160 < below_one < 240
