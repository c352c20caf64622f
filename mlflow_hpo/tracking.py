"""The MLflow mirror of an Optuna study: one child run per finished trial.

Optuna's storage is the source of truth. Each finished trial becomes one
child run of the study's parent run, written by run id through
`MlflowClient` (never through the global active-run stack) from a
background thread, so tracking latency does not slow the trials down. A
child run is created only once its trial has finished, so a crash never
leaves a RUNNING child behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

_logger = logging.getLogger(__name__)

TAG_STUDY = "mlflow_hpo.study_name"
TAG_TRIAL = "mlflow_hpo.trial_number"
TAG_STATE = "mlflow_hpo.trial_state"
TAG_ROLE = "mlflow_hpo.role"
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"

_STATUS_OF_STATE = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "KILLED",
    optuna.trial.TrialState.FAIL: "FAILED",
}
# Characters that every MLflow store accepts in metric and param keys,
# Windows servers included (colons are rejected there).
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")
_WRITE_ATTEMPTS = 5


def safe_key(name: str) -> str:
    """Rewrite ``name`` into MLflow's allowed key characters, deterministically.

    A name that had to change gets a short hash of the original appended,
    so two names that differ only in rejected characters stay distinct.
    """
    cleaned = _BAD_KEY_CHARS.sub("_", name)
    if cleaned == name and len(name) <= MAX_ENTITY_KEY_LENGTH:
        return name
    suffix = hashlib.sha1(name.encode()).hexdigest()[:6]
    return f"{cleaned[: MAX_ENTITY_KEY_LENGTH - 7]}_{suffix}"


def safe_value(value: Any, limit: int = MAX_PARAM_VAL_LENGTH) -> str:
    """Return ``value`` as text within MLflow's length ``limit``, hashed when cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    keep = limit - len(digest) - 20
    return f"{text[:keep]}... [sha1 {digest}]"


def trial_run_name(number: int) -> str:
    return f"trial-{number:04d}"


@dataclasses.dataclass
class TrialRecord:
    """Everything the mirror writes for one finished trial."""

    number: int
    state: optuna.trial.TrialState
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    curves: Mapping[str, list[float]] = dataclasses.field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None
    parent_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)


class StudyMirror:
    """Writes finished trials as child runs of ``parent_run_id`` in the background."""

    def __init__(self, client: MlflowClient, *, experiment_id: str, parent_run_id: str, study_name: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.key_mapping: dict[str, str] = {}
        self._mirrored: set[int] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[TrialRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="mlflow-hpo-mirror", daemon=True)
        self._errors = 0
        self._thread.start()

    def mirrored_trials(self) -> set[int]:
        """Load the trial numbers that already have a child run under the parent."""
        query = f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'"
        numbers: set[int] = set()
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=1000, page_token=token
            )
            for run in page:
                number = run.data.tags.get(TAG_TRIAL)
                if number is not None:
                    numbers.add(int(number))
            token = page.token
            if not token:
                break
        with self._lock:
            self._mirrored |= numbers
        return numbers

    def submit(self, record: TrialRecord) -> None:
        """Queue a finished trial; a trial already mirrored is skipped."""
        with self._lock:
            if record.number in self._mirrored:
                return
            self._mirrored.add(record.number)
        self._queue.put(record)

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _drain(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                self._with_retries(self._write, record)
            except Exception:  # noqa: BLE001 - tracking must never stop the study
                self._errors += 1
                _logger.exception("Failed to write trial %d to MLflow; the study goes on.", record.number)

    def _with_retries(self, action: Any, record: TrialRecord) -> None:
        delay = 0.5
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                action(record)
                return
            except MlflowException as exc:
                if attempt == _WRITE_ATTEMPTS or "RESOURCE_ALREADY_EXISTS" in str(exc.error_code):
                    raise
                _logger.warning(
                    "MLflow write for trial %d failed (attempt %d of %d): %s; retrying in %.1f s.",
                    record.number, attempt, _WRITE_ATTEMPTS, exc, delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _write(self, record: TrialRecord) -> None:
        tags = {
            TAG_PARENT: self.parent_run_id,
            TAG_RUN_NAME: trial_run_name(record.number),
            TAG_STUDY: self.study_name,
            TAG_TRIAL: str(record.number),
            TAG_STATE: record.state.name,
            **record.tags,
        }
        run = self.client.create_run(self.experiment_id, start_time=record.start_ms, tags=tags)
        now_ms = int(time.time() * 1000)
        metrics = [
            Metric(self._key(k), float(v), now_ms, 0) for k, v in record.metrics.items() if _finite(v)
        ]
        for name, curve in record.curves.items():
            key = self._key(name)
            metrics.extend(Metric(key, float(v), now_ms, step) for step, v in enumerate(curve) if _finite(v))
        params = [Param(self._key(k), safe_value(v)) for k, v in record.params.items()]
        self.log_batch(run.info.run_id, metrics=metrics, params=params)
        status = _STATUS_OF_STATE.get(record.state, "FAILED")
        self.client.set_terminated(run.info.run_id, status=status, end_time=record.end_ms)
        if record.parent_metrics:
            parent_metrics = [
                Metric(self._key(k), float(v), now_ms, record.number)
                for k, v in record.parent_metrics.items()
                if _finite(v)
            ]
            self.log_batch(self.parent_run_id, metrics=parent_metrics)

    def _key(self, name: str) -> str:
        key = safe_key(name)
        if key != name:
            self.key_mapping[name] = key
        return key

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
    ) -> None:
        """Log in chunks that respect MLflow's per-request limits."""
        metric_list, param_list, tag_list = list(metrics), list(params), list(tags)
        for start in range(0, len(metric_list), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metric_list[start : start + MAX_METRICS_PER_BATCH])
        entities = [("p", p) for p in param_list] + [("t", t) for t in tag_list]
        for start in range(0, len(entities), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = entities[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self.client.log_batch(
                run_id,
                params=[e for kind, e in chunk if kind == "p"],  # type: ignore[misc]
                tags=[e for kind, e in chunk if kind == "t"],  # type: ignore[misc]
            )


def tag(key: str, value: Any) -> RunTag:
    return RunTag(key, safe_value(value, MAX_TAG_VAL_LENGTH))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
