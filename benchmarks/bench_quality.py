"""Quality for the budget: held-out and CV scores of four tuners on real datasets.

Every tool gets the same training rows and is scored on the same held-out
rows: mlflow_hpo's own split (``mlflow_hpo.data.prepare`` with the default
``test_size`` and seed), which ``tune`` reproduces exactly. The metric is
the one mlflow_hpo picks for the task (ROC AUC, log loss, RMSE), given to
every tool. mlflow_hpo, LightGBMTunerCV and FLAML get the same wall-clock
budget; RandomizedSearchCV runs its 100 iterations and its time is shown.

A tool is "tied" with mlflow_hpo when the paired bootstrap interval (95 %,
resampling held-out rows) of the difference of their test scores spans 0.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score, root_mean_squared_error
from sklearn.model_selection import KFold, RandomizedSearchCV, StratifiedKFold

from benchmarks._common import Section, penguins_csv, single_thread_space, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.data import Dataset
from mlflow_hpo.study import Job, plan

SEED = 42
N_FOLDS = 5
RANDOM_SEARCH_ITERATIONS = 100
BOOTSTRAP_SAMPLES = 1000
# Every tool trains single-threaded (mlflow_hpo through a space file).
N_THREADS = 1
# RandomizedSearchCV has no early stopping, so it samples the number of trees.
RANDOM_SEARCH_TREES = (50, 1000)
TOOLS = ("mlflow_hpo (auto)", "RandomizedSearchCV", "LightGBMTunerCV", "FLAML (lgbm)")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each tool may spend: seconds, random-search iterations, boosting rounds."""

    seconds: float
    random_search_iterations: int
    max_rounds: int
    random_search_trees: tuple[int, int]


FULL = Budget(20.0, RANDOM_SEARCH_ITERATIONS, 2000, RANDOM_SEARCH_TREES)
# A smoke run: a few seconds and a few dozen rounds per tool.
QUICK = Budget(2.0, 3, 30, (10, 30))


# name, task note, data spec (or a function writing a CSV into a folder), target
DATASETS: list[tuple[str, str, str | Callable[[Path], str], str]] = [
    ("breast_cancer", "binary, 569 rows, 30 numeric", "sklearn:breast_cancer", ""),
    ("digits", "multiclass (10), 1,797 rows, 64 numeric", "sklearn:digits", ""),
    ("diabetes", "regression, 442 rows, 10 numeric", "sklearn:diabetes", ""),
    ("penguins", "regression of body mass, 342 rows, 3 category columns", penguins_csv, "body_mass_g"),
    ("wine", "multiclass (3), small: 178 rows", "sklearn:wine", ""),
]


def test_score(task: str, y: np.ndarray, prediction: np.ndarray) -> float:
    """Score predictions the way mlflow_hpo's default scorer of ``task`` does (greater is better)."""
    if task == "binary":
        return float(roc_auc_score(y, prediction[:, 1]))
    if task == "multiclass":
        return -float(log_loss(y, prediction, labels=np.arange(prediction.shape[1])))
    return -float(root_mean_squared_error(y, prediction))


def _lgb_objective(task: str, n_classes: int) -> dict[str, Any]:
    if task == "binary":
        return {"objective": "binary", "metric": "auc"}
    if task == "multiclass":
        return {"objective": "multiclass", "metric": "multi_logloss", "num_class": n_classes}
    return {"objective": "regression", "metric": "rmse"}


def _folds(task: str) -> Any:
    if task == "regression":
        return KFold(N_FOLDS, shuffle=True, random_state=SEED)
    return StratifiedKFold(N_FOLDS, shuffle=True, random_state=SEED)


def _predict(task: str, model: Any, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(X) if task == "regression" else model.predict_proba(X))


def run_ours(config: TuneConfig, dataset: Dataset) -> tuple[float, np.ndarray, dict[str, Any]]:
    result = tune(config)
    model = mlflow.sklearn.load_model(result.model_uri)
    prediction = _predict(dataset.task, model, dataset.raw_test)
    trials = sum(result.n_trials_by_state.values())
    return result.best_cv_mean, prediction, {"trials": trials, "reported_test": result.test_score}


def _random_search_space(job: Job, trees: tuple[int, int]) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for param in job.space:
        low, high = param.low, param.high
        if param.kind == "categorical":
            space[param.argument] = list(param.choices)
        elif param.kind == "float" and param.log:
            space[param.argument] = stats.loguniform(low, high)
        elif param.kind == "float":
            space[param.argument] = stats.uniform(low, high - low)  # type: ignore[operator]
        elif param.log:
            space[param.argument] = sorted({int(v) for v in np.geomspace(low, high, 64).round()})  # type: ignore[arg-type]
        else:
            space[param.argument] = stats.randint(low, int(high) + 1)  # type: ignore[arg-type]
    low, high = trees
    space["n_estimators"] = sorted({int(v) for v in np.geomspace(low, high, 64).round()})
    return space


def run_random_search(job: Job, budget: Budget) -> tuple[float, np.ndarray, dict[str, Any]]:
    dataset = job.dataset
    model_class = lgb.LGBMRegressor if dataset.task == "regression" else lgb.LGBMClassifier
    estimator = model_class(**{"random_state": SEED, "n_jobs": N_THREADS, "verbose": -1, **job.space.fixed})
    search = RandomizedSearchCV(
        estimator,
        _random_search_space(job, budget.random_search_trees),
        n_iter=budget.random_search_iterations,
        scoring=job.objective.name,
        cv=_folds(dataset.task),
        random_state=SEED,
        n_jobs=1,
    )
    search.fit(dataset.X_train, dataset.y_train)
    prediction = _predict(dataset.task, search.best_estimator_, dataset.X_test)
    return float(search.best_score_), prediction, {"trials": budget.random_search_iterations}


def run_lightgbm_tuner(job: Job, budget: Budget) -> tuple[float, np.ndarray, dict[str, Any]]:
    from optuna_integration.lightgbm import LightGBMTunerCV

    dataset = job.dataset
    params = {
        **_lgb_objective(dataset.task, dataset.n_classes),
        "verbosity": -1,
        "seed": SEED,
        "num_threads": N_THREADS,
    }
    train_set = lgb.Dataset(dataset.X_train, dataset.y_train)
    tuner = LightGBMTunerCV(
        params,
        train_set,
        num_boost_round=budget.max_rounds,
        folds=_folds(dataset.task),
        callbacks=[lgb.early_stopping(50, verbose=False)],
        time_budget=max(1, int(budget.seconds)),
        return_cvbooster=True,
        optuna_seed=SEED,
        show_progress_bar=False,
    )
    tuner.run()
    rounds = tuner.get_best_booster().best_iteration
    booster = lgb.train(tuner.best_params, lgb.Dataset(dataset.X_train, dataset.y_train), num_boost_round=rounds)
    raw = np.asarray(booster.predict(dataset.X_test))
    prediction = np.column_stack([1 - raw, raw]) if dataset.task == "binary" else raw
    best = float(tuner.best_score)
    cv_score = best if dataset.task == "binary" else -best
    return cv_score, prediction, {"trials": len(tuner.study.trials)}


def run_flaml(job: Job, budget: Budget) -> tuple[float, np.ndarray, dict[str, Any]]:
    from flaml import AutoML

    dataset = job.dataset
    metric = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}[dataset.task]
    automl = AutoML()
    automl.fit(
        X_train=dataset.X_train,
        y_train=dataset.y_train,
        task="regression" if dataset.task == "regression" else "classification",
        metric=metric,
        estimator_list=["lgbm"],
        time_budget=budget.seconds,
        eval_method="cv",
        n_splits=N_FOLDS,
        seed=SEED,
        n_jobs=N_THREADS,
        verbose=0,
    )
    prediction = _predict(dataset.task, automl, dataset.X_test)
    loss = float(automl.best_loss)
    cv_score = 1 - loss if metric == "roc_auc" else -loss
    return cv_score, prediction, {"trials": len(automl.config_history)}


def _tie_interval(task: str, y: np.ndarray, ours: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Return the 95 % paired bootstrap interval of score(other) - score(ours)."""
    rng = np.random.default_rng(SEED)
    differences = []
    for _ in range(BOOTSTRAP_SAMPLES):
        index = rng.integers(0, len(y), len(y))
        if task != "regression" and len(np.unique(y[index])) < len(np.unique(y)):
            continue
        differences.append(test_score(task, y[index], other[index]) - test_score(task, y[index], ours[index]))
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def _one_dataset(name: str, spec: str, target: str, budget: Budget, folder: Path) -> list[dict[str, Any]]:
    config = TuneConfig(
        data=spec,
        target=target,
        space=single_thread_space(folder),
        timeout=budget.seconds,
        n_trials=None,
        max_boost_rounds=budget.max_rounds,
        register_model="",
        seed=SEED,
    )
    outcomes: list[dict[str, Any]] = []
    with tracking_store(folder):
        job = plan(config)
        runners: list[Callable[[], tuple[float, np.ndarray, dict[str, Any]]]] = [
            lambda: run_ours(config, job.dataset),
            lambda: run_random_search(job, budget),
            lambda: run_lightgbm_tuner(job, budget),
            lambda: run_flaml(job, budget),
        ]
        for tool, runner in zip(TOOLS, runners, strict=True):
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cv_score, prediction, extra = runner()
            seconds = time.perf_counter() - started
            score = test_score(job.dataset.task, job.dataset.y_test, prediction)
            outcomes.append({"dataset": name, "tool": tool, "cv": cv_score, "test": score,
                             "seconds": seconds, "prediction": prediction, **extra})
    ours = outcomes[0]
    for outcome in outcomes:
        low, high = _tie_interval(job.dataset.task, job.dataset.y_test, ours["prediction"], outcome["prediction"])
        outcome["diff_low"], outcome["diff_high"] = low, high
        outcome["metric"] = job.objective.name
        outcome["verdict"] = _verdict(outcome is ours, low, high)
    return outcomes


# Held-out splits (and search seeds) on which diabetes is run again, to see
# whether the single-split result is a property of the tools or of the split.
SPLIT_SEEDS = (0, 1, 2, 3, 4)


def split_seed_check(budget: Budget, folder: Path, seeds: tuple[int, ...] = SPLIT_SEEDS) -> list[dict[str, Any]]:
    """Run mlflow_hpo and RandomizedSearchCV on diabetes with several held-out splits.

    mlflow_hpo runs twice per split: with its default pruner, which judges
    trials on small data by completed folds, and with ``pruner=median``,
    which judges them every 10 boosting rounds.
    """
    outcomes = []
    for seed in seeds:
        config = TuneConfig(
            data="sklearn:diabetes",
            space=single_thread_space(folder),
            timeout=budget.seconds,
            n_trials=None,
            max_boost_rounds=budget.max_rounds,
            register_model="",
            seed=seed,
        )
        rounds_config = dataclasses.replace(config, pruner="median")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tracking_store(folder / f"seed{seed}"):
                job = plan(config)
                ours_cv, ours_prediction, _ = run_ours(config, job.dataset)
                other_cv, other_prediction, _ = run_random_search(job, budget)
            with tracking_store(folder / f"seed{seed}-rounds"):
                rounds_cv, rounds_prediction, _ = run_ours(rounds_config, job.dataset)
        y = job.dataset.y_test
        low, high = _tie_interval("regression", y, ours_prediction, other_prediction)
        outcomes.append({
            "seed": seed,
            "ours_test": test_score("regression", y, ours_prediction),
            "ours_rounds_test": test_score("regression", y, rounds_prediction),
            "random_search_test": test_score("regression", y, other_prediction),
            "ours_cv": ours_cv,
            "ours_rounds_cv": rounds_cv,
            "random_search_cv": other_cv,
            "diff_low": low,
            "diff_high": high,
            "verdict": _verdict(False, low, high),
        })
    return outcomes


def _verdict(is_ours: bool, low: float, high: float) -> str:
    """Name the test-score difference against mlflow_hpo from its 95 % interval."""
    if is_ours:
        return "-"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "tied"


def run(*, quick: bool, workdir: Path) -> Section:
    """Run every tool on every dataset and report which ones beat mlflow_hpo."""
    datasets = DATASETS[-1:] if quick else DATASETS
    budget = QUICK if quick else FULL
    rows: list[list[Any]] = []
    records: list[dict[str, Any]] = []
    for index, (name, _, spec, target) in enumerate(datasets):
        folder = workdir / f"quality{index}"
        folder.mkdir(parents=True, exist_ok=True)
        data_spec = spec(folder) if callable(spec) else spec
        for outcome in _one_dataset(name, data_spec, target, budget, folder):
            outcome.pop("prediction")
            records.append(outcome)
            interval = "-" if outcome["verdict"] == "-" else (
                f"{outcome['verdict']} [{outcome['diff_low']:+.4f}, {outcome['diff_high']:+.4f}]"
            )
            rows.append([name, outcome["metric"], outcome["tool"], outcome["test"], outcome["cv"],
                         outcome["trials"], outcome["seconds"], interval])
    beaten = [r for r in records if r["verdict"] == "better"]
    section = Section(
        name="quality",
        title="Quality for the budget",
        columns=["dataset", "metric", "tool", "test score", "best CV score", "trials", "wall s",
                 "vs mlflow_hpo (95 % interval of the test-score difference)"],
        rows=rows,
        target="mlflow_hpo best or tied on every dataset",
        target_met=not beaten,
        notes=[f"budget {budget.seconds:g} s per tool and dataset, at most {budget.max_rounds} boosting rounds; "
               f"RandomizedSearchCV ran {budget.random_search_iterations} iterations whatever the time."],
        data={"budget": dataclasses.asdict(budget), "records": records},
    )
    for record in beaten:
        section.notes.append(f"{record['tool']} beat mlflow_hpo on {record['dataset']}.")
    # The quick run checks one split, so that the code stays in working order.
    checks = split_seed_check(budget, workdir / "split-seeds", SPLIT_SEEDS[:1] if quick else SPLIT_SEEDS)
    section.data["diabetes_split_seeds"] = checks
    for check in checks:
        section.notes.append(
            f"diabetes, split seed {check['seed']}: mlflow_hpo test {check['ours_test']:.4g} "
            f"(pruned by rounds: {check['ours_rounds_test']:.4g}), "
            f"RandomizedSearchCV {check['random_search_test']:.4g} ({check['verdict']} "
            f"[{check['diff_low']:+.3f}, {check['diff_high']:+.3f}]); "
            f"CV {check['ours_cv']:.4g} (by rounds {check['ours_rounds_cv']:.4g}) "
            f"against {check['random_search_cv']:.4g}."
        )
    return section
