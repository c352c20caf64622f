"""Overhead: wall time over pure training time for the same seeded objective.

Every variant tunes single-threaded LightGBM on breast_cancer with the
same 5-fold stratified cross-validation, the same search space and the
same seeded multivariate TPE sampler, so every variant trains the same
sequence of models. Training time is measured inside the objective, around the
cross-validation call only. Everything else in the wall time is what the
tool adds: sampling, storage writes and tracking.

Because every variant trains the same models, the floor's training time is
shown as a second denominator: work in background threads that slows the
training itself down (on 2 cores, a tracking thread competes with the
model for CPU) appears there and not in a variant's own ratio.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from benchmarks._common import Section, single_thread_space, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.cv import cv_attr
from mlflow_hpo.study import Job, evaluate, plan

SEED = 42
TARGET_RATIO = 1.05


def job_config(n_trials: int, space: str) -> TuneConfig:
    """Return the configuration that every variant shares (ours runs it as is)."""
    return TuneConfig(
        data="sklearn:breast_cancer",
        space=space,
        cv="stratified",
        n_folds=5,
        n_trials=n_trials,
        pruner="none",
        register_model="",
        seed=SEED,
    )


def _sampler() -> optuna.samplers.BaseSampler:
    # The sampler that strategy=auto picks for the LightGBM space.
    return optuna.samplers.TPESampler(seed=SEED, multivariate=True)


class TrainingClock:
    """Objective wrapper that adds up the time spent in cross-validation."""

    def __init__(self, job: Job, on_result: Callable[[optuna.Trial, dict[str, Any], float], None] | None = None):
        self.job = job
        self.on_result = on_result
        self.seconds = 0.0

    def __call__(self, trial: optuna.Trial) -> float:
        kwargs = self.job.space.model_kwargs(self.job.space.suggest(trial))
        started = time.perf_counter()
        result = evaluate(self.job, None, kwargs)
        self.seconds += time.perf_counter() - started
        if self.on_result is not None:
            self.on_result(trial, kwargs, result.mean)
        return result.mean


def _optuna(job: Job, n_trials: int, storage: str | None, callbacks: list[Any] | None = None) -> tuple[float, float]:
    clock = TrainingClock(job)
    started = time.perf_counter()
    study = optuna.create_study(direction="maximize", sampler=_sampler(), storage=storage)
    study.optimize(clock, n_trials=n_trials, callbacks=callbacks)
    return time.perf_counter() - started, clock.seconds


def run_memory(job: Job, n_trials: int, folder: Path) -> tuple[float, float]:
    return _optuna(job, n_trials, None)


def run_sqlite(job: Job, n_trials: int, folder: Path) -> tuple[float, float]:
    return _optuna(job, n_trials, f"sqlite:///{folder / 'optuna.db'}")


def run_mlflow_callback(job: Job, n_trials: int, folder: Path) -> tuple[float, float]:
    from optuna_integration.mlflow import MLflowCallback

    callback = MLflowCallback(tracking_uri=mlflow.get_tracking_uri(), metric_name=job.objective.name)
    return _optuna(job, n_trials, None, callbacks=[callback])


def run_nested_runs(job: Job, n_trials: int, folder: Path) -> tuple[float, float]:
    """Hand-written tracking: a parent run and one nested child run per trial."""

    def log_child(trial: optuna.Trial, kwargs: dict[str, Any], value: float) -> None:
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            mlflow.log_metric(f"cv_{job.objective.name}_mean", value)

    clock = TrainingClock(job, on_result=log_child)
    started = time.perf_counter()
    with mlflow.start_run(run_name="study"):
        study = optuna.create_study(direction="maximize", sampler=_sampler())
        study.optimize(clock, n_trials=n_trials)
        mlflow.log_params(study.best_params)
        mlflow.log_metric("best_value", study.best_value)
    return time.perf_counter() - started, clock.seconds


def run_ours(config: TuneConfig) -> dict[str, float]:
    """Run ``tune`` and split its wall time into the search and the whole job."""
    started = time.perf_counter()
    result = tune(config)
    total = time.perf_counter() - started
    client = MlflowClient()
    run = client.get_run(result.parent_run_id)
    # wall_time_s spans the trials, the mirror's last write and reconciliation.
    search = run.data.metrics["wall_time_s"]
    study = optuna.load_study(study_name=result.study_name, storage=_journal_storage())
    training = sum(cv_attr(t, "duration_s", 0.0) for t in study.get_trials(deepcopy=False))
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    return {"search": search, "total": total, "training": training, "children": float(len(children))}


@contextlib.contextmanager
def mirror_in_thread() -> Iterator[None]:
    """Make the MLflow mirror write every child run from its thread (what-if only).

    By default the mirror moves its writes to a separate process after
    ``PROCESS_AFTER_TRIALS`` trials. This what-if keeps them in the tuning
    process, as before that process existed, to measure what it saves.
    """
    from mlflow_hpo.tracking import StudyMirror

    defaults = StudyMirror.__init__.__kwdefaults__
    assert defaults is not None
    saved = defaults["process_after"]
    defaults["process_after"] = None
    try:
        yield
    finally:
        defaults["process_after"] = saved


def _journal_storage() -> optuna.storages.BaseStorage:
    from mlflow_hpo.storage import open_storage, storage_url

    return open_storage(storage_url(mlflow.get_tracking_uri()))


VARIANTS: list[tuple[str, Callable[[Job, int, Path], tuple[float, float]]]] = [
    ("Optuna, in-memory storage (floor)", run_memory),
    ("Optuna, SQLite storage", run_sqlite),
    ("Optuna + optuna_integration MLflowCallback", run_mlflow_callback),
    ("Optuna + hand-written nested MLflow runs", run_nested_runs),
]


def run(*, quick: bool, workdir: Path) -> Section:
    """Measure every variant with the same number of trials, one after another."""
    n_trials = 3 if quick else 100
    space = single_thread_space(workdir)
    rows: list[list[Any]] = []
    data: dict[str, Any] = {"n_trials": n_trials}
    floor_training = float("nan")
    for index, (label, variant) in enumerate(VARIANTS):
        with tracking_store(workdir / f"variant{index}"):
            job = plan(job_config(n_trials, space))
            wall, training = variant(job, n_trials, workdir / f"variant{index}")
        if index == 0:
            floor_training = training
        rows.append([label, n_trials, wall, training, wall / training, wall / floor_training])
        data[label] = {"wall_s": wall, "training_s": training}

    with tracking_store(workdir / "ours"):
        ours = run_ours(job_config(n_trials, space))
    search_ratio = ours["search"] / ours["training"]
    rows.append(["mlflow_hpo.tune: search (trials + MLflow mirror)", n_trials, ours["search"], ours["training"],
                 search_ratio, ours["search"] / floor_training])
    rows.append(["mlflow_hpo.tune: whole job (+ setup, refit, report, model logging)", n_trials, ours["total"],
                 ours["training"], ours["total"] / ours["training"], ours["total"] / floor_training])
    data["ours"] = ours
    if not quick:
        with tracking_store(workdir / "what-if"), mirror_in_thread():
            what_if = run_ours(job_config(n_trials, space))
        rows.append(["what-if, not shipped: mlflow_hpo.tune search, mirror writes in a thread only", n_trials,
                     what_if["search"], what_if["training"], what_if["search"] / what_if["training"],
                     what_if["search"] / floor_training])
        data["what_if_mirror_in_thread"] = what_if
    section = Section(
        name="overhead",
        title="Overhead",
        columns=["variant", "trials", "wall s", "training s", "wall / training", "wall / floor's training"],
        rows=rows,
        target=f"search wall / training <= {TARGET_RATIO}",
        target_met=search_ratio <= TARGET_RATIO,
        data=data,
    )
    if int(ours["children"]) != n_trials:
        section.notes.append(f"ours wrote {int(ours['children'])} child runs for {n_trials} trials.")
    return section
