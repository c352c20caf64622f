"""Pruner choice, the step axis of reports, and how pruned trials reach MLflow."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig
from mlflow_hpo.cv import CV_ATTR, choose_splitter, cv_attr
from mlflow_hpo.models import get_adapter
from mlflow_hpo.pruning import FoldWindowMedianPruner, choose_pruner, make_pruner, reporting_hooks
from mlflow_hpo.strategy import Strategy
from mlflow_hpo.study import Job, evaluate, plan, trial_record
from mlflow_hpo.tracking import StudyMirror

Y = np.array([0, 1] * 300)


def _strategy(name: str = "tpe") -> Strategy:
    return Strategy(name, "", optuna.samplers.RandomSampler(seed=0))


@pytest.mark.parametrize(
    ("pruner", "model", "n_folds", "strategy", "expected"),
    [
        ("auto", "lightgbm", 5, "tpe", ("median", "rounds")),
        ("auto", "xgboost", 3, "tpe", ("median", "rounds")),
        ("auto", "random_forest", 5, "tpe", ("wilcoxon", "folds")),
        ("auto", "random_forest", 4, "tpe", ("none", "")),
        ("median", "logistic_regression", 5, "tpe", ("median", "folds")),
        ("hyperband", "lightgbm", 5, "tpe", ("hyperband", "rounds")),
        ("wilcoxon", "lightgbm", 5, "tpe", ("wilcoxon", "folds")),
        ("none", "lightgbm", 5, "tpe", ("none", "")),
        ("median", "lightgbm", 5, "grid", ("none", "")),
        ("auto", "random_forest", 5, "grid", ("none", "")),
    ],
)
def test_choose_pruner_rules(
    pruner: str, model: str, n_folds: int, strategy: str, expected: tuple[str, str]
) -> None:
    config = TuneConfig(model=model, pruner=pruner, n_folds=n_folds, cv="stratified")
    splitter = choose_splitter(config, "binary", Y, None)

    plan_ = choose_pruner(config, get_adapter(model, "binary"), _strategy(strategy), splitter)

    assert (plan_.name, plan_.axis) == expected


@pytest.mark.parametrize(
    ("pruner", "model", "expected"),
    [
        ("auto", "lightgbm", ("median", "folds")),
        ("auto", "xgboost", ("median", "folds")),
        ("median", "lightgbm", ("median", "rounds")),
        ("auto", "random_forest", ("wilcoxon", "folds")),
    ],
)
def test_auto_pruner_axis_small_data(pruner: str, model: str, expected: tuple[str, str]) -> None:
    config = TuneConfig(model=model, pruner=pruner, cv="stratified")
    splitter = choose_splitter(config, "binary", Y[:400], None)

    plan_ = choose_pruner(config, get_adapter(model, "binary"), _strategy(), splitter)

    assert (plan_.name, plan_.axis) == expected
    if expected == ("median", "folds") and pruner == "auto":
        assert "400 training rows are fewer than 500" in plan_.reason
        pruner_ = make_pruner(config, get_adapter(model, "binary"), _strategy(), splitter)
        assert isinstance(pruner_, FoldWindowMedianPruner)
        assert (pruner_.stride, pruner_._n_warmup_steps) == (1, 1)


def test_median_pruner_defaults() -> None:
    config = TuneConfig(pruner="median", cv="stratified")
    splitter = choose_splitter(config, "binary", Y, None)

    pruner = make_pruner(config, get_adapter("lightgbm", "binary"), _strategy(), splitter)

    assert isinstance(pruner, FoldWindowMedianPruner)
    assert pruner._n_startup_trials == 5
    assert pruner._n_warmup_steps == 10
    assert pruner.stride == config.max_boost_rounds


def test_grid_study_gets_nop_pruner() -> None:
    config = TuneConfig(pruner="median", cv="stratified")
    splitter = choose_splitter(config, "binary", Y, None)

    pruner = make_pruner(config, get_adapter("lightgbm", "binary"), _strategy("grid"), splitter)

    assert isinstance(pruner, optuna.pruners.NopPruner)


def _job(**changes: object) -> Job:
    values: dict[str, object] = {"n_trials": 10, "max_boost_rounds": 40, "cv": "stratified", "seed": 0}
    values.update(changes)
    return plan(TuneConfig(**values))  # type: ignore[arg-type]


def _study(job: Job) -> optuna.Study:
    return optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=make_pruner(job.config, job.adapter, job.strategy, job.splitter),
    )


def test_round_reports_average_seen_folds() -> None:
    job = _job(pruner="median")
    study = _study(job)
    trial = study.ask()
    on_round, on_fold = reporting_hooks(job, trial)
    assert on_round is not None
    assert on_fold is None

    for round_index, value in [(0, 0.80), (5, 0.90), (10, 0.85)]:
        on_round(0, round_index, value)
    on_round(1, 0, 0.70)
    on_round(1, 10, 0.75)

    stride = job.config.max_boost_rounds
    assert study.trials[0].intermediate_values == {
        0: 0.80,
        10: 0.85,
        stride: pytest.approx((0.90 + 0.70) / 2),
        stride + 10: pytest.approx((0.90 + 0.75) / 2),
    }


def test_window_median_judges_current_fold() -> None:
    study = optuna.create_study(direction="maximize")
    for _ in range(5):
        study.add_trial(
            optuna.trial.create_trial(value=0.85, intermediate_values={0: 0.9, 100: 0.8})
        )
    trial = study.ask()
    trial.report(0.99, 0)
    trial.report(0.6, 100)
    frozen = study.trials[-1]

    window = FoldWindowMedianPruner(stride=100, n_startup_trials=5, n_warmup_steps=0)
    plain = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)

    assert window.prune(study, frozen)
    assert not plain.prune(study, frozen)


def _run(job: Job, n_trials: int) -> optuna.Study:
    study = _study(job)

    def objective(trial: optuna.Trial) -> float:
        result = evaluate(job, trial, job.space.model_kwargs(job.space.suggest(trial)))
        trial.set_user_attr(CV_ATTR, result.record())
        return result.mean

    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
def test_median_prunes_on_one_step_axis() -> None:
    job = _job(pruner="median")

    study = _run(job, n_trials=12)

    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    stride = job.config.max_boost_rounds
    folds_reported = {step // stride for t in study.trials for step in t.intermediate_values}
    assert folds_reported == set(range(job.splitter.n_splits))
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        assert all(step % 10 == 0 for step in steps)
        assert all(step % stride < stride for step in steps)


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
def test_auto_pruner_fold_means() -> None:
    job = _job(cv="auto")
    assert len(job.dataset.y_train) < 500

    study = _run(job, n_trials=12)

    assert optuna.trial.TrialState.PRUNED in {t.state for t in study.trials}
    for trial in study.trials:
        assert set(trial.intermediate_values) <= set(range(job.splitter.n_splits))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            scores = cv_attr(trial, "scores")
            running_means = [sum(scores[: k + 1]) / (k + 1) for k in range(len(scores))]
            assert [trial.intermediate_values[k] for k in range(len(scores))] == pytest.approx(running_means)


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(("pruner", "model"), [("hyperband", "lightgbm"), ("wilcoxon", "logistic_regression")])
def test_pruner_runs_without_step_warnings(pruner: str, model: str) -> None:
    job = _job(pruner=pruner, model=model, metric="roc_auc")

    study = _run(job, n_trials=6)

    finished = {t.state for t in study.trials}
    assert finished <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    if pruner == "wilcoxon":
        for trial in study.trials:
            if trial.state == optuna.trial.TrialState.COMPLETE:
                reported = [trial.intermediate_values[fold] for fold in range(job.splitter.n_splits)]
                assert reported == cv_attr(trial, "scores")


def test_pruned_child_run_killed_with_step(client: MlflowClient) -> None:
    job = _job(pruner="median")
    distributions = job.space.distributions()
    params = {name: dist.to_external_repr(dist.low if hasattr(dist, "low") else 0) for name, dist in distributions.items()}
    pruned = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        params=params,
        distributions=distributions,
        intermediate_values={0: 0.91, 10: 0.93, 100: 0.88},
    )
    parent = client.create_run("0")
    mirror = StudyMirror(client, experiment_id="0", parent_run_id=parent.info.run_id, study_name="pruning-test")

    mirror.submit(trial_record(job, pruned, {}, None))
    mirror.close(timeout=60)

    children = client.search_runs(["0"], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 1
    child = children[0]
    assert child.info.status == "KILLED"
    assert child.data.tags["mlflow_hpo.pruned_at_step"] == "100"
    assert child.data.metrics["pruned_at_value"] == pytest.approx(0.88)


@pytest.mark.slow
def test_pruning_benchmark_quick_mode() -> None:
    from benchmarks.bench_pruning import main as bench_main

    summary = bench_main(["--quick"])

    assert summary["trials"] == 6
    assert set(summary["variants"]) == {"none", "median"}
    assert summary["time_ratio"] > 0
    for row in summary["variants"].values():
        assert row["complete"] + row["pruned"] == 6
        assert 0.5 < row["best_cv"] <= 1.0


def test_pruned_trial_log_line(caplog: pytest.LogCaptureFixture) -> None:
    from mlflow_hpo.study import _log_trial

    pruned = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, value=-56.7437, intermediate_values={0: -50.1, 1: -56.7437}
    )

    with caplog.at_level("INFO", logger="mlflow_hpo.study"):
        _log_trial(pruned, best=-57.312)

    assert "PRUNED at step 1 (last report -56.7437); best so far -57.312" in caplog.text
