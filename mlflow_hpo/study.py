"""The tuning job: checks, the Optuna study, its MLflow mirror and the final model."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient

from mlflow_hpo import __version__
from mlflow_hpo._errors import ConfigError, TrialError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.cv import CV_ATTR, CVResult, Splitter, choose_splitter, cross_validate, cv_attr
from mlflow_hpo.data import Dataset, prepare
from mlflow_hpo.metrics import Objective
from mlflow_hpo.models import FitContext, ModelAdapter, get_adapter
from mlflow_hpo.multi_objective import (
    SecondaryObjective,
    check_stored_directions,
    multi_objective_function,
    prepare_objectives,
    trial_metrics,
)
from mlflow_hpo.nested import check_nested_folds
from mlflow_hpo.pruning import make_pruner, pruner_label
from mlflow_hpo.runs import PARENT_ATTR, ParentRun, attach_parent, close_parent
from mlflow_hpo.spaces import (
    SPEC_ATTR,
    SearchSpace,
    describe_changes,
    resolve_space,
    space_signature,
)
from mlflow_hpo.staged import check_staged, run_in_stages, suggest_values
from mlflow_hpo.storage import open_storage, redact_url, storage_url, study_exists, study_lock
from mlflow_hpo.strategy import Strategy, choose_strategy, trial_budget
from mlflow_hpo.tracking import StudyMirror, TrialRecord, safe_value, tag
from mlflow_hpo.trial_loop import HeartbeatFailures, TrialLoop
from mlflow_hpo.warm_start import enqueue_warm_start, warm_start_configs
from mlflow_hpo.workers import CONFIG_ATTR, finalize_once, stored_config

_logger = logging.getLogger(__name__)

SPACE_ATTR = "search_space"
# Study user attribute: content hash of the table the study was created on.
DATASET_DIGEST_ATTR = "dataset_digest"
# Settings that decide which rows train and score each trial, and how long
# boosters train. A resumed study must keep them, or its trials would be
# compared across different folds and held-out rows.
SCORING_FIELDS = (
    "target", "test_size", "seed", "cv", "n_folds", "time_column", "group_column", "gap",
    "early_stopping_rounds", "max_boost_rounds",
)
# Below this many training rows, each model fit uses one thread.
SMALL_TABLE_ROWS = 10_000
FAIL_REASON_ATTR = "fail_reason"


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """Outcome of `tune`.

    Attributes:
        study_name: Name of the Optuna study.
        parent_run_id: MLflow run that contains the study.
        best_params: Hyperparameters of the winner.
        best_cv_mean, best_cv_std: CV score of the winner (mean and std over folds).
        test_score: Score of the refit winner on the held-out rows.
        metric: Scorer name of the objective.
        n_trials_by_state: Count of trials per Optuna state.
        model_uri: URI of the logged model, or "" when nothing was logged.
        registered_version: Registered model version, or None.
    """

    study_name: str
    parent_run_id: str
    best_params: dict[str, Any]
    best_cv_mean: float
    best_cv_std: float
    test_score: float
    metric: str
    n_trials_by_state: dict[str, int]
    model_uri: str = ""
    registered_model: str = ""
    registered_version: str | None = None


@dataclasses.dataclass
class Job:
    """Everything the study needs, checked before the first trial."""

    config: TuneConfig
    dataset: Dataset
    objective: Objective
    adapter: ModelAdapter
    space: SearchSpace
    splitter: Splitter
    strategy: Strategy
    context: FitContext
    study_name: str
    storage_url: str
    secondary: tuple[SecondaryObjective, ...] = ()


def plan(config: TuneConfig) -> Job:
    """Load the data and check every input; raise ConfigError before any run exists."""
    dataset = prepare(config)
    config, objective, secondary = prepare_objectives(config, dataset.task)
    adapter = get_adapter(config.model, dataset.task)
    space = resolve_space(
        config, dataset.task, n_rows=len(dataset.X_train), n_features=dataset.X_train.shape[1]
    )
    splitter = choose_splitter(
        config, dataset.task, dataset.y_train, dataset.groups_train, iterative=adapter.iterative
    )
    strategy = choose_strategy(config, space, n_rows=len(dataset.X_train), n_splits=splitter.n_splits)
    check_staged(config, space)
    if config.nested_cv:
        check_nested_folds(config, splitter.scheme, dataset, adapter.iterative)
    # Every trial thread of every local worker gets an equal share of the cores.
    n_threads = max(1, (os.cpu_count() or 1) // (config.n_jobs * config.workers))
    if len(dataset.X_train) < SMALL_TABLE_ROWS:
        # Thread start-up and synchronisation cost more than they save on small
        # tables, and spin-waiting threads slow down badly on a busy machine.
        n_threads = 1
    context = FitContext(
        task=dataset.task,
        n_classes=dataset.n_classes,
        metric=objective.name,
        seed=config.seed,
        n_threads=n_threads,
        early_stopping_rounds=config.early_stopping_rounds,
        max_boost_rounds=config.max_boost_rounds,
    )
    study_name = config.study_name or _new_study_name(dataset.name, config.model)
    tracking_uri = mlflow.get_tracking_uri()
    return Job(config, dataset, objective, adapter, space, splitter, strategy, context, study_name, storage_url(tracking_uri), secondary)


def _new_study_name(dataset: str, model: str) -> str:
    return f"{dataset}-{model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def tune(config: TuneConfig) -> TuneResult:
    """Tune, track and register one model as ``config`` describes.

    Example:
        >>> from mlflow_hpo import TuneConfig, tune
        >>> result = tune(TuneConfig(n_trials=5, register_model=""))  # doctest: +SKIP
        >>> round(result.best_cv_mean, 3)  # doctest: +SKIP
        0.993
    """
    job = plan(config)
    client = MlflowClient()
    heartbeat_failures = HeartbeatFailures()
    storage = open_storage(job.storage_url, failed_trial_callback=heartbeat_failures)
    # Processes started together on one new study must agree on one parent run.
    warm_configs = warm_start_configs(job, storage)
    with study_lock(job.storage_url, job.study_name, "setup"):
        study = _create_or_load_study(job, storage)
        enqueue_warm_start(study, job, warm_configs)
        parent = attach_parent(
            client,
            study_name=job.study_name,
            stored_parent=study.user_attrs.get(PARENT_ATTR),
            experiment_name=config.experiment_name,
        )
        study.set_user_attr(PARENT_ATTR, parent.run_id)
    mirror = open_mirror(client, job, parent)
    failed = True
    try:
        _log_parent_setup(client, job, parent)
        mirror.mirrored_trials()
        started = time.monotonic()
        loop = make_trial_loop(study, job, mirror, heartbeat_failures)
        if config.workers > 1:
            from mlflow_hpo.workers import run_local_workers

            run_local_workers(job, config.workers)
        else:
            _optimize(loop, job)
        loop.wait_for_others()
        _reconcile(study, job, mirror)
        mirror.close()
        from mlflow_hpo.finalize import finalize

        result = finalize_once(
            study, job, lambda: finalize(study, job, parent, client, wall_time=time.monotonic() - started)
        )
        failed = False
        return result
    finally:
        mirror.close(timeout=60)
        close_parent(client, parent, failed=failed)


def open_mirror(client: MlflowClient, job: Job, parent: ParentRun) -> StudyMirror:
    """Start the MLflow mirror of ``job``'s study under ``parent``."""
    return StudyMirror(
        client,
        experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id,
        study_name=job.study_name,
        # A partial, unlike a lambda, can be pickled for the writer process.
        lock=functools.partial(study_lock, job.storage_url, job.study_name, "mirror"),
    )


def _create_or_load_study(job: Job, storage: optuna.storages.BaseStorage) -> optuna.Study:
    signature = space_signature(job.space)
    exists = study_exists(storage, job.study_name)
    study = optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        directions=[job.objective.direction] + [s.direction for s in job.secondary],  # type: ignore[arg-type]
        sampler=job.strategy.sampler,
        pruner=make_pruner(job.config, job.adapter, job.strategy, job.splitter),
        load_if_exists=True,
    )
    if exists:
        check_stored_directions(study, job)
        stored = study.user_attrs.get(SPACE_ATTR)
        if stored is not None and stored != signature:
            raise ConfigError(
                f"study {job.study_name!r} was created with another search space "
                f"({space_difference(stored, signature)}); "
                f"use a new study_name such as {free_study_name(storage, job.study_name)}."
            )
        stored_metric = study.user_attrs.get("metric")
        if stored_metric is not None and stored_metric != job.objective.name:
            raise ConfigError(
                f"study {job.study_name!r} optimizes metric={stored_metric!r}, not {job.objective.name!r}; "
                f"pass metric={stored_metric} to resume it or use a new study_name such as {job.study_name}-v2."
            )
        check_stored_scoring(study, job, free_study_name(storage, job.study_name))
    else:
        study.set_user_attr(SPACE_ATTR, signature)
        study.set_user_attr(SPEC_ATTR, job.space.to_spec())
        study.set_user_attr("metric", job.objective.name)
        study.set_user_attr("model", job.config.model)
        study.set_user_attr(CONFIG_ATTR, stored_config(job.config.replace(study_name=job.study_name)))
        study.set_user_attr(DATASET_DIGEST_ATTR, job.dataset.digest)
    return study


def check_stored_scoring(study: optuna.Study, job: Job, new_name: str) -> None:
    """Raise ConfigError if resuming ``study`` would score trials on other rows or data than before.

    Studies created before these records existed are not checked.
    """
    stored_digest = study.user_attrs.get(DATASET_DIGEST_ATTR)
    if stored_digest is not None and stored_digest != job.dataset.digest:
        raise ConfigError(
            f"study {job.study_name!r} was created on other data (table digest {stored_digest}, "
            f"data={job.config.data!r} gives {job.dataset.digest}); resume it with the same table, "
            f"or use a new study_name such as {new_name}."
        )
    stored = study.user_attrs.get(CONFIG_ATTR) or {}
    changed = []
    for name in SCORING_FIELDS:
        current = getattr(job.config, name)
        if name not in stored or stored[name] == current:
            continue
        # An empty target is the dataset's own target, which the table digest already covers.
        if name == "target" and "" in (stored[name], current):
            continue
        changed.append((name, stored[name], current))
    if changed:
        created = ", ".join(f"{name}={value!r} (not {current!r})" for name, value, current in changed)
        stored_options = " ".join(f"{name}={value}" for name, value, _ in changed)
        raise ConfigError(
            f"study {job.study_name!r} was created with {created}, so new trials would be scored on "
            f"other rows; pass {stored_options} to resume it, or use a new study_name such as {new_name}."
        )


def free_study_name(storage: optuna.storages.BaseStorage, name: str) -> str:
    """Return ``<name>-v2``, or the next ``-vN`` suffix that no study in ``storage`` uses yet."""
    match = re.fullmatch(r"(.+)-v(\d+)", name)
    stem, number = (match[1], int(match[2]) + 1) if match else (name, 2)
    taken = set(optuna.study.get_all_study_names(storage))
    while f"{stem}-v{number}" in taken:
        number += 1
    return f"{stem}-v{number}"


def space_difference(stored: dict[str, str], current: dict[str, str]) -> str:
    """Describe how the ``current`` space signature differs from the ``stored`` one, per parameter."""
    return "; ".join(describe_changes(stored, current))


def _log_parent_setup(client: MlflowClient, job: Job, parent: ParentRun) -> None:
    run = client.get_run(parent.run_id)
    # Keys that `mlflow run` already logged keep their spelling ("5", not "5.0").
    params = {k: v for k, v in job.config.to_params().items() if k not in run.data.params}
    if parent.resumed:
        params = {}
    tags = {
        "mlflow_hpo.study_name": job.study_name,
        "mlflow_hpo.storage": redact_url(job.storage_url),
        "mlflow_hpo.strategy": job.strategy.name,
        "mlflow_hpo.strategy_reason": job.strategy.reason,
        "mlflow_hpo.sampler": type(job.strategy.sampler).__name__,
        "mlflow_hpo.seed": str(job.config.seed),
        "mlflow_hpo.pruner": pruner_label(job),
        "mlflow_hpo.task": job.dataset.task,
        "mlflow_hpo.metric": job.objective.name,
        "mlflow_hpo.cv": job.splitter.scheme,
        "mlflow_hpo.dataset_digest": job.dataset.digest,
        "mlflow_hpo.version": __version__,
        "mlflow_hpo.versions": (
            f"mlflow={mlflow.__version__} optuna={optuna.__version__} python={sys.version.split()[0]}"
        ),
    }
    # A data URL may carry a password, and a value past MLflow's limit would abort the study.
    mirror_params = [mlflow.entities.Param(k, safe_value(redact_url(v))) for k, v in params.items()]
    client.log_batch(parent.run_id, params=mirror_params, tags=[tag(k, v) for k, v in tags.items()])


def make_trial_loop(
    study: optuna.Study, job: Job, mirror: StudyMirror, heartbeat_failures: HeartbeatFailures
) -> TrialLoop:
    """Build the loop that runs this process's trials and mirrors each one as it finishes."""
    curves: dict[int, dict[str, list[float]]] = {}
    lock = threading.Lock()
    objective = multi_objective_function(job, _make_objective(job, curves, lock))
    return TrialLoop(
        study,
        storage_url=job.storage_url,
        objective=objective,
        on_finished=_make_trial_callback(job, mirror, curves, lock),
        n_trials=trial_budget(job.config.n_trials, job.strategy),
        timeout=job.config.timeout,
        n_jobs=job.config.n_jobs,
        retry_failed=job.config.retry_failed,
        heartbeat_failures=heartbeat_failures,
    )


def _optimize(loop: TrialLoop, job: Job) -> None:
    """Run trials until the study contains ``n_trials`` finished trials, over all processes, or time runs out."""
    n_run = run_in_stages(loop, job) if job.config.staged else loop.run()
    if n_run == 0:
        _logger.info(
            "Study %s already contains its %s trials or other processes are running them; no trial ran here.",
            job.study_name, loop.n_trials,
        )


def _make_objective(
    job: Job, curves: dict[int, dict[str, list[float]]], lock: threading.Lock
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        values = suggest_values(job, trial)
        kwargs = job.space.model_kwargs(values)
        started = time.perf_counter()
        try:
            result = evaluate(job, trial, kwargs)
        except TrialError as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc))
            raise
        except optuna.TrialPruned:
            trial.set_user_attr(CV_ATTR, {"duration_s": time.perf_counter() - started})
            raise
        trial.set_user_attr(CV_ATTR, result.record(time.perf_counter() - started))
        curve = result.mean_curve()
        with lock:
            # One curve per trial, under the same key in every trial, so that
            # MLflow's chart view overlays the trials in one chart.
            curves[trial.number] = {f"learning_curve_{result.curve_metric}": curve} if curve else {}
        return result.mean

    return objective


def evaluate(job: Job, trial: optuna.Trial | None, kwargs: dict[str, Any]) -> CVResult:
    """Cross-validate ``kwargs``; report fold scores to the pruner when ``trial`` is given."""
    from mlflow_hpo.pruning import reporting_hooks

    on_round, on_fold = reporting_hooks(job, trial)
    return cross_validate(
        job.adapter,
        kwargs,
        job.context,
        job.dataset.X_train,
        job.dataset.y_train,
        job.splitter,
        job.objective,
        groups=job.dataset.groups_train,
        on_round=on_round,
        on_fold=on_fold,
    )


def _make_trial_callback(
    job: Job, mirror: StudyMirror, curves: dict[int, dict[str, list[float]]], lock: threading.Lock
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    best_so_far = BestSoFar()

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with lock:
            trial_curves = curves.pop(trial.number, {})
            best = best_so_far.update(study, trial)
        mirror.submit(trial_record(job, trial, trial_curves, best))
        _log_trial(trial, best)

    return callback


class BestSoFar:
    """Running best value of a single-objective study, updated by the trial callback.

    Optuna's journal storage computes ``study.best_value`` by scanning every
    finished trial, so reading it after each trial made the trial loop
    slower as the study grew. This class reads it from the storage on the
    first trial and every ``refresh_every`` trials. In between, it compares
    the value with each trial that this process finishes, so trials of
    other processes count from the next read on.
    """

    def __init__(self, refresh_every: int = 50) -> None:
        self.refresh_every = refresh_every
        self.value: float | None = None
        self._calls = 0
        self._directions: list[optuna.study.StudyDirection] = []

    def update(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> float | None:
        """Return the best value after ``trial`` finished, or None for a multi-objective study."""
        if not self._directions:
            self._directions = list(study.directions)
        if len(self._directions) > 1:
            return None
        if self._calls % self.refresh_every == 0:
            self.value = _best_value(study)
        elif trial.state == optuna.trial.TrialState.COMPLETE and trial.values:
            value = trial.values[0]
            maximize = self._directions[0] == optuna.study.StudyDirection.MAXIMIZE
            if self.value is None or (value > self.value if maximize else value < self.value):
                self.value = value
        self._calls += 1
        return self.value


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except (ValueError, RuntimeError):  # RuntimeError: a multi-objective study has no single best
        return None


def trial_record(
    job: Job, trial: optuna.trial.FrozenTrial, curves: dict[str, list[float]], best: float | None
) -> TrialRecord:
    """Build the child-run content of a finished trial."""
    attrs = trial.user_attrs
    params = {name: trial.params.get(name, "inactive") for name in job.space.names}
    metrics: dict[str, float] = {}
    if trial.state == optuna.trial.TrialState.COMPLETE and trial.values:
        metrics[f"cv_{job.objective.name}_mean"] = trial.values[0]
        metrics.update(trial_metrics(trial))
        metrics[f"cv_{job.objective.name}_std"] = cv_attr(trial, "std", float("nan"))
        for fold, score in enumerate(cv_attr(trial, "scores", [])):
            metrics[f"cv_{job.objective.name}_fold{fold}"] = score
        iterations = [it for it in cv_attr(trial, "best_iterations", []) if it is not None]
        if iterations:
            metrics["best_iteration_median"] = float(np.median(iterations))
    duration = cv_attr(trial, "duration_s")
    if duration is not None:
        metrics["duration_s"] = duration
    tags: dict[str, str] = {}
    if "stage" in attrs:
        tags["mlflow_hpo.stage"] = str(attrs["stage"])
    if trial.state == optuna.trial.TrialState.PRUNED:
        last_step = trial.last_step
        tags["mlflow_hpo.pruned_at_step"] = str(last_step)
        if last_step is not None:
            metrics["pruned_at_value"] = trial.intermediate_values[last_step]
    if trial.state == optuna.trial.TrialState.FAIL:
        tags["mlflow_hpo.fail_reason"] = attrs.get(FAIL_REASON_ATTR, "the objective raised or returned no value")
    parent_metrics = {"best_so_far": best} if best is not None else {}
    return TrialRecord(
        number=trial.number,
        state=trial.state,
        params=params,
        metrics=metrics,
        tags=tags,
        curves=curves,
        start_ms=_ms(trial.datetime_start),
        end_ms=_ms(trial.datetime_complete),
        parent_metrics=parent_metrics,
    )


def _ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _log_trial(trial: optuna.trial.FrozenTrial, best: float | None) -> None:
    if trial.state == optuna.trial.TrialState.FAIL:
        _logger.warning(
            "Trial %d failed with params %s: %s",
            trial.number, trial.params, trial.user_attrs.get(FAIL_REASON_ATTR, "see the traceback above"),
        )
        return
    value = "-" if not trial.values else ", ".join(f"{v:.6g}" for v in trial.values)
    best_text = "-" if best is None else f"{best:.6g}"
    if trial.state == optuna.trial.TrialState.PRUNED:
        # A pruned trial's value is its last report (a running mean or one
        # fold's score), not a CV mean, so it is not compared with the best.
        _logger.info("Trial %d PRUNED at step %s (last report %s); best so far %s",
                     trial.number, trial.last_step, value, best_text)
        return
    _logger.info("Trial %d %s: value %s, best so far %s", trial.number, trial.state.name, value, best_text)


def _reconcile(study: optuna.Study, job: Job, mirror: StudyMirror) -> None:
    """Give every finished trial without a child run one (after crashes or other workers).

    A trial queued here that another process mirrors first is skipped by the
    mirror's locked check, so no trial gets two child runs.
    """
    mirrored = mirror.mirrored_trials()
    best = _best_value(study)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.number not in mirrored:
            mirror.submit(trial_record(job, trial, {}, best))
