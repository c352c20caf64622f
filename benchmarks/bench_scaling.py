"""Scaling: trials per minute with 1 and 2 local worker processes.

Both runs tune the same single-threaded LightGBM objective (breast_cancer,
5-fold stratified CV, built-in space with ``n_jobs: 1`` fixed) with
``tune(TuneConfig(workers=...))``, which starts that many worker
processes on the study's default journal storage. Throughput is the number
of finished trials divided by the span from the first trial's start to the
last trial's end, read from the storage, so process start-up and the final
refit are left out.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import Section, single_thread_space, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.storage import open_storage, storage_url

TARGET_SPEEDUP = 1.8


def _trials_per_minute(uri: str, study_name: str) -> tuple[float, int, float]:
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url(uri)))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
    starts = [t.datetime_start.timestamp() for t in finished if t.datetime_start is not None]
    ends = [t.datetime_complete.timestamp() for t in finished if t.datetime_complete is not None]
    span = max(ends) - min(starts)
    return 60 * len(finished) / span, len(finished), span


def run(*, quick: bool, workdir: Path) -> Section:
    """Run the same study budget with 1 and then 2 workers and compare throughput."""
    if "workers" not in {field.name for field in dataclasses.fields(TuneConfig)}:
        raise RuntimeError("TuneConfig has no workers option; the scaling benchmark needs it.")
    n_trials = 6 if quick else 100
    space = single_thread_space(workdir)
    rows: list[list[Any]] = []
    rates: dict[int, float] = {}
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
        with tracking_store(workdir / name) as uri:
            started = time.perf_counter()
            tune(config)
            total = time.perf_counter() - started
            rate, finished, span = _trials_per_minute(uri, name)
        rates[workers] = rate
        rows.append([workers, finished, span, rate, total])
    speedup = rates[2] / rates[1]
    return Section(
        name="scaling",
        title="Scaling",
        columns=["workers", "finished trials", "trial span s", "trials / min", "tune() wall s"],
        rows=rows,
        target=f"2 workers >= {TARGET_SPEEDUP}x the trials per minute of 1 (measured {speedup:.2f}x)",
        target_met=speedup >= TARGET_SPEEDUP,
        notes=["strategy=random so that the sampler's cost does not differ between the runs; "
               "each worker draws its own random parameters, so the two runs train different models "
               "of the same space."],
        data={"rates": rates, "speedup": speedup},
    )
