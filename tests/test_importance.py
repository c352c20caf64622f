"""Hyperparameter importance: evaluators, conditional parameters, small studies, read-only use."""

from __future__ import annotations

import math

import optuna
import pytest

from mlflow_hpo.report import ReportContext, compute_importance, export_study, importance_metrics

PARAMS = ["booster", "learning_rate", "max_depth", "rate_drop"]


def _objective(trial: optuna.Trial) -> float:
    booster = trial.suggest_categorical("booster", ["gbtree", "dart"])
    learning_rate = trial.suggest_float("learning_rate", 1e-3, 1.0, log=True)
    max_depth = trial.suggest_int("max_depth", 2, 10)
    score = -abs(math.log10(learning_rate) + 1.0) + 0.01 * max_depth
    if booster == "dart":
        rate_drop = trial.suggest_float("rate_drop", 0.0, 0.5)
        score -= rate_drop
    return score


def _study(n_trials: int, *, fail_after: int | None = None, directions: list[str] | None = None) -> optuna.Study:
    study = optuna.create_study(
        directions=directions or ["maximize"], sampler=optuna.samplers.RandomSampler(seed=7)
    )

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        if fail_after is not None and trial.number >= fail_after:
            raise optuna.TrialPruned()
        score = _objective(trial)
        if directions and len(directions) == 2:
            return score, trial.params["max_depth"] * 1.5
        return score

    study.optimize(objective, n_trials=n_trials)
    return study


def _context(importance: str = "ped_anova", objectives: list[str] | None = None) -> ReportContext:
    objectives = objectives or ["score"]
    directions = ["maximize", "minimize"][: len(objectives)]
    return ReportContext(
        study_name="toy",
        objectives=objectives,
        directions=directions,
        config={"importance": importance, "seed": "3"},
        param_names=PARAMS,
    )


def test_too_few_completed_trials_skipped() -> None:
    study = _study(6, fail_after=3)

    result = compute_importance(study, _context())

    assert result["skipped"] == "only 3 completed trials; importance needs at least 5"
    assert result["importances"] == {}
    assert importance_metrics(result) == {}


def test_ped_anova_rates_conditional_param() -> None:
    study = _study(40)

    result = compute_importance(study, _context())

    assert result["evaluator"] == "PedAnovaImportanceEvaluator"
    assert result["skipped"] is None
    assert set(result["importances"]) == set(PARAMS)
    assert result["left_out"] == {}
    assert math.isclose(sum(result["importances"].values()), 1.0)


def test_fanova_leaves_conditional_param_out() -> None:
    study = _study(40)

    result = compute_importance(study, _context("fanova"))

    assert result["evaluator"] == "FanovaImportanceEvaluator"
    assert set(result["importances"]) == {"booster", "learning_rate", "max_depth"}
    assert "rate_drop" in result["left_out"]
    assert result["left_out"]["rate_drop"].startswith("conditional: active in ")
    assert "fANOVA needs a value in every trial" in result["left_out"]["rate_drop"]


def test_rare_conditional_branch_left_out() -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial({"booster": "dart"})
    for _ in range(11):
        study.enqueue_trial({"booster": "gbtree"})
    study.optimize(_objective, n_trials=12)

    result = compute_importance(study, _context())

    assert result["left_out"] == {"rate_drop": "conditional: active in 1 of 12 completed trials, fewer than 2 trials on one side"}
    assert "rate_drop" not in result["importances"]


def test_unsampled_param_listed_with_reason() -> None:
    study = _study(10)
    ctx = _context()
    ctx = ReportContext(**{**ctx.__dict__, "param_names": [*PARAMS, "never_sampled"]})

    result = compute_importance(study, ctx)

    assert result["left_out"]["never_sampled"] == "not sampled in any completed trial"


def test_importance_leaves_stored_trials_unchanged() -> None:
    study = _study(30)
    before = export_study(study)

    compute_importance(study, _context())
    compute_importance(study, _context("fanova"))

    assert export_study(study) == before


def test_evaluator_error_becomes_skip_reason() -> None:
    study = _study(10)
    # A context whose parameter list names a parameter with two distributions
    # makes Optuna's evaluator raise; the report must record it, not raise.
    study.add_trial(
        optuna.trial.create_trial(
            params={"booster": "gbtree", "learning_rate": 5.0, "max_depth": 3},
            distributions={
                "booster": optuna.distributions.CategoricalDistribution(["gbtree", "dart"]),
                "learning_rate": optuna.distributions.FloatDistribution(1.0, 10.0),
                "max_depth": optuna.distributions.IntDistribution(2, 10),
            },
            value=0.1,
        )
    )

    result = compute_importance(study, _context("fanova"))

    assert result["skipped"] is not None
    assert result["skipped"].startswith("the evaluator raised")
    assert result["importances"] == {}


def test_multi_objective_importance_per_objective() -> None:
    study = _study(30, directions=["maximize", "minimize"])

    result = compute_importance(study, _context(objectives=["score", "latency"]))

    assert result["target"] == "reaching the Pareto front of score, latency"
    assert set(result["per_objective"]) == {"score", "latency"}
    assert max(result["per_objective"]["latency"], key=result["per_objective"]["latency"].get) == "max_depth"


@pytest.mark.parametrize("name", ["ped_anova", "fanova"])
def test_importance_metrics_named_per_param(name: str) -> None:
    result = compute_importance(_study(20), _context(name))

    metrics = importance_metrics(result)

    assert set(metrics) == {f"importance_{p}" for p in result["importances"]}
