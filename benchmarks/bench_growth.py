"""Growth: per-trial overhead of ours early in a study and thousands of trials later.

``tune`` always fits a model, so this benchmark swaps the model adapter for
one whose fit returns a constant-time dummy estimator and runs the real
``tune``: the same trial loop, default journal storage, user attributes,
MLflow mirror and reconciliation as any study. The only model work left is
scoring the dummy on each of 2 folds (well under a millisecond per fold).

Two figures per window of trials:

- trial loop: time from one trial's start to the next trial's start, read
  from the storage's timestamps (sampling, storage writes, callback);
- mirror: time the mirror waits for one trial's child run to be written
  (in its writer process after the first trials),
  timed around ``StudyMirror._write``.
"""

from __future__ import annotations

import statistics
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

import mlflow_hpo.study as study_module
from benchmarks._common import Section, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.models import FitContext, FitResult, ModelAdapter
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.tracking import StudyMirror

TARGET_RATIO = 1.5
# Trials on each side of the measured trial number that form its window.
WINDOW = 50
QUICK_WINDOW = 5


class _DummyClassifier(ClassifierMixin, BaseEstimator):
    """Predicts a fixed random probability per row; fitting costs nothing."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        positive = np.random.default_rng(self.seed).random(len(X))
        return np.column_stack([1 - positive, positive])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


class TrivialAdapter(ModelAdapter):
    """A model family whose fit returns at once, so a trial costs only the tool's work."""

    name = "trivial"
    iterative = False

    def fit(self, kwargs: dict[str, Any], context: FitContext, X_fit: pd.DataFrame, y_fit: np.ndarray,
            X_val: pd.DataFrame | None = None, y_val: np.ndarray | None = None, on_round: Any = None) -> FitResult:
        seed = zlib.crc32(repr(sorted(kwargs.items())).encode())
        return FitResult(_DummyClassifier(seed))

    def fit_final(self, kwargs: dict[str, Any], context: FitContext, X: pd.DataFrame, y: np.ndarray,
                  n_rounds: int | None) -> Any:
        return _DummyClassifier(0)


@contextmanager
def _trivial_model_and_timed_mirror(write_seconds: dict[int, float]) -> Iterator[None]:
    """Swap in the trivial adapter and time each child-run write, then restore both."""
    original_get_adapter = study_module.get_adapter
    original_write = StudyMirror._write
    lock = threading.Lock()

    def timed_write(self: StudyMirror, record: Any) -> None:
        started = time.perf_counter()
        original_write(self, record)
        with lock:
            write_seconds[record.number] = time.perf_counter() - started

    study_module.get_adapter = lambda model, task: TrivialAdapter()
    StudyMirror._write = timed_write  # type: ignore[method-assign]
    try:
        yield
    finally:
        study_module.get_adapter = original_get_adapter
        StudyMirror._write = original_write  # type: ignore[method-assign]


def _window_ms(values: dict[int, float], center: int, window: int) -> float:
    """Median of ``values`` over trial numbers within ``window`` of ``center``, in ms."""
    low, high = max(0, center - window), center + window
    selected = [v for n, v in values.items() if low <= n < high]
    return 1000 * statistics.median(selected) if selected else float("nan")


def run(*, quick: bool, workdir: Path) -> Section:
    """Run one study of n trials with the trivial model and compare the two windows."""
    early, late = (10, 60) if quick else (100, 5000)
    window = QUICK_WINDOW if quick else WINDOW
    n_trials = late + window
    write_seconds: dict[int, float] = {}
    config = TuneConfig(
        data="sklearn:breast_cancer",
        cv="stratified",
        n_folds=2,
        n_trials=n_trials,
        strategy="random",
        pruner="none",
        importance="none",
        register_model="",
        study_name="growth",
    )
    with tracking_store(workdir / "growth") as uri, _trivial_model_and_timed_mirror(write_seconds):
        started = time.perf_counter()
        tune(config)
        total = time.perf_counter() - started
        study = optuna.load_study(study_name="growth", storage=open_storage(storage_url(uri)))
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

    starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
    loop_seconds = {n: b - a for n, (a, b) in enumerate(zip(starts, starts[1:], strict=False))}
    loop_early, loop_late = _window_ms(loop_seconds, early, window), _window_ms(loop_seconds, late, window)
    mirror_early, mirror_late = _window_ms(write_seconds, early, window), _window_ms(write_seconds, late, window)
    rows: list[list[Any]] = [
        ["trial loop (sampling, storage, callback)", loop_early, loop_late, loop_late / loop_early],
        ["MLflow mirror (child run write, in the writer process)", mirror_early, mirror_late, mirror_late / mirror_early],
        ["both, per trial", loop_early + mirror_early, loop_late + mirror_late,
         (loop_late + mirror_late) / (loop_early + mirror_early)],
    ]
    worst = max(row[3] for row in rows)
    return Section(
        name="growth",
        title="Growth",
        columns=["part", f"ms/trial near trial {early}", f"ms/trial near trial {late}", "ratio"],
        rows=rows,
        target=f"ratio <= {TARGET_RATIO} for each part",
        target_met=worst <= TARGET_RATIO,
        notes=[
            f"{len(trials)} trials in one study, strategy=random (the sampler's own cost stays flat), "
            f"median over trials {early}±{window} and {late}±{window}; the whole tune() took {total:.0f} s.",
        ],
        data={"n_trials": len(trials), "total_s": total, "loop_ms": [loop_early, loop_late],
              "mirror_ms": [mirror_early, mirror_late]},
    )
