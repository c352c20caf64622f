"""Scaling: trials per minute with 1 and 2 local worker processes.

Both runs tune the same single-threaded LightGBM objective (breast_cancer,
5-fold stratified CV, built-in space with ``n_jobs: 1`` fixed) with
``tune(TuneConfig(workers=...))``, which starts that many worker
processes on the study's default journal storage. Both studies start with
the same configurations queued (drawn once from the space with a seeded
random sampler), so both runs train the same models and only the number
of workers differs. Throughput is the number of finished trials divided by
the span from the first trial's start to the last trial's end, read from
the storage, so process start-up and the final refit are left out. The
CPU time of the benchmark process and all its child processes (workers
and their MLflow writer processes) shows where the cores' time went.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import Section, single_thread_space, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.cv import cv_attr
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.study import _create_or_load_study, plan

TARGET_SPEEDUP = 1.8


def _trials_per_minute(uri: str, study_name: str) -> tuple[float, int, float, float]:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url(uri)))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
    starts = [t.datetime_start.timestamp() for t in finished if t.datetime_start is not None]
    ends = [t.datetime_complete.timestamp() for t in finished if t.datetime_complete is not None]
    span = max(ends) - min(starts)
    training = sum(cv_attr(t, "duration_s", 0.0) for t in finished)
    return 60 * len(finished) / span, len(finished), span, training


def _queued_configurations(config: TuneConfig, n_trials: int) -> list[dict[str, Any]]:
    """Draw ``n_trials`` configurations of the space once, with a seeded random sampler."""
    job = plan(config)
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configurations = []
    for _ in range(n_trials):
        trial = draws.ask()
        job.space.suggest(trial)
        configurations.append(dict(trial.params))
    return configurations


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(*, quick: bool, workdir: Path) -> Section:
    """Run the same study budget with 1 and then 2 workers and compare throughput."""
    if "workers" not in {field.name for field in dataclasses.fields(TuneConfig)}:
        raise RuntimeError("TuneConfig has no workers option; the scaling benchmark needs it.")
    n_trials = 6 if quick else 100
    space = single_thread_space(workdir)
    rows: list[list[Any]] = []
    rates: dict[int, float] = {}
    queued: list[dict[str, Any]] = []
    for workers in (1, 2):
        name = f"scaling-{workers}"
        config = TuneConfig(
            data="sklearn:breast_cancer",
            cv="stratified",
            n_folds=5,
            space=space,
            strategy="random",
            pruner="none",
            importance="none",
            n_trials=n_trials,
            register_model="",
            study_name=name,
            workers=workers,
        )
        queued = queued or _queued_configurations(config, n_trials)
        with tracking_store(workdir / name) as uri:
            # The study as tune() creates it (workers read its stored configuration), with the queue added.
            study = _create_or_load_study(plan(config), open_storage(storage_url(uri)))
            for params in queued:
                study.enqueue_trial(params)
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            tune(config)
            total = time.perf_counter() - started
            cpu = _cpu_seconds() - cpu_before
            rate, finished, span, training = _trials_per_minute(uri, name)
        rates[workers] = rate
        rows.append([workers, finished, span, rate, total, training / finished, cpu / finished, cpu / total])
    speedup = rates[2] / rates[1]
    return Section(
        name="scaling",
        title="Scaling",
        columns=["workers", "finished trials", "trial span s", "trials / min", "tune() wall s",
                 "training s / trial", "CPU s / trial (all processes)", "cores busy (CPU s / wall s)"],
        rows=rows,
        target=f"2 workers >= {TARGET_SPEEDUP}x the trials per minute of 1 (measured {speedup:.2f}x)",
        target_met=speedup >= TARGET_SPEEDUP,
        notes=["Both studies start with the same queued configurations, so both runs train the same models."],
        data={"rates": rates, "speedup": speedup},
    )
