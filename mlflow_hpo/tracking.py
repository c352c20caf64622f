"""The MLflow mirror of an Optuna study: one child run per finished trial.

Optuna's storage is the source of truth. Each finished trial becomes one
child run of the study's parent run, written by run id through
`MlflowClient` (never through the global active-run stack) from a
background thread, so tracking latency does not slow the trials down. A
child run is created only once its trial has finished.

Every process of a study may mirror any trial (its own as they finish,
others' when it reconciles), so each write holds a study-wide lock while
it checks for an existing child and creates one only if there is none. A
child that a crash left RUNNING half-written is completed by the next write.
When the tracking server is unreachable, writes are retried in the
background for up to ``OUTAGE_LIMIT_S`` seconds of continuous failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import optuna
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_ENTITIES_PER_BATCH,
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
# Most points of one learning curve that a child run gets. Writing every
# boosting round made the mirror thread the largest cost of fast trials.
MAX_CURVE_POINTS = 100
# Characters that every MLflow store accepts in metric and param keys,
# Windows servers included (colons are rejected there).
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")
# Attempts for a write that failed with a non-transient error.
_WRITE_ATTEMPTS = 3
# Seconds of continuous write failures after which queued trials are given
# up (logged as errors) instead of retried; the next reconcile writes them.
OUTAGE_LIMIT_S = 600.0
_MAX_RETRY_DELAY_S = 10.0
# MLflow error codes of failures that may pass: server down, overloaded or
# restarting, and store errors such as a locked SQLite file.
_TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"}


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

    def __init__(
        self,
        client: MlflowClient,
        *,
        experiment_id: str,
        parent_run_id: str,
        study_name: str,
        lock: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.client = client
        self._study_lock = lock or contextlib.nullcontext
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.key_mapping: dict[str, str] = {}
        self._mirrored: set[int] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[TrialRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="mlflow-hpo-mirror", daemon=True)
        self._errors = 0
        self._failing_since: float | None = None
        self._logged_mapping: dict[str, str] = {}
        self._thread.start()

    def mirrored_trials(self) -> set[int]:
        """Load the trial numbers that already have a finished child run under the parent.

        A tracking server that is down is retried with backoff for up to
        ``OUTAGE_LIMIT_S`` seconds, as trial writes are.
        """
        started = time.monotonic()
        delay = 0.5
        while True:
            try:
                return self._load_mirrored_trials()
            except Exception as exc:
                if not _is_transient(exc) or time.monotonic() - started > OUTAGE_LIMIT_S:
                    raise
                _logger.warning("Listing the child runs failed: %s; retrying in %.1f s.", _redact(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY_S)

    def _load_mirrored_trials(self) -> set[int]:
        query = f"tags.`{TAG_PARENT}` = '{self.parent_run_id}'"
        numbers: set[int] = set()
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=1000, page_token=token
            )
            for run in page:
                number = run.data.tags.get(TAG_TRIAL)
                # A RUNNING child was left half-written by a crash; the next write completes it.
                if number is not None and run.info.status != "RUNNING":
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

    @property
    def errors(self) -> int:
        """Number of trials that could not be written."""
        return self._errors

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the writer thread and record the key mapping."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self._thread.is_alive() or self.key_mapping == self._logged_mapping:
            return
        mapping = dict(self.key_mapping)
        try:
            self.client.log_dict(self.parent_run_id, mapping, "key_mapping.json")
            self._logged_mapping = mapping
        except Exception as exc:  # noqa: BLE001 - tracking must never stop the study
            _logger.warning("Could not log key_mapping.json to run %s: %s", self.parent_run_id, _redact(exc))

    def _drain(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                self._with_retries(self._write, record)
            except Exception as exc:  # noqa: BLE001 - tracking must never stop the study
                self._errors += 1
                with self._lock:
                    self._mirrored.discard(record.number)
                _logger.error(
                    "Failed to write trial %d to MLflow (%s); the study goes on and the next "
                    "run of this study writes it.", record.number, _redact(exc),
                )

    def _with_retries(self, action: Any, record: TrialRecord) -> None:
        delay = 0.5
        attempt = 0
        while True:
            attempt += 1
            try:
                action(record)
                self._failing_since = None
                return
            except Exception as exc:
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                transient = _is_transient(exc)
                if not transient and attempt >= _WRITE_ATTEMPTS:
                    raise
                if transient and now - self._failing_since > OUTAGE_LIMIT_S:
                    raise
                _logger.warning(
                    "MLflow write for trial %d failed (attempt %d): %s; retrying in %.1f s.",
                    record.number, attempt, _redact(exc), delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY_S)

    def _find_child(self, number: int) -> Any:
        query = f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{number}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=10)
        finished = [run for run in runs if run.info.status != "RUNNING"]
        candidates = finished or runs
        return candidates[0] if candidates else None

    def _write(self, record: TrialRecord) -> None:
        with self._study_lock():
            existing = self._find_child(record.number)
            if existing is not None and existing.info.status != "RUNNING":
                return
            run_id = None if existing is None else existing.info.run_id
            self._write_child(record, run_id)

    def _write_child(self, record: TrialRecord, run_id: str | None) -> None:
        tags = {
            TAG_PARENT: self.parent_run_id,
            TAG_RUN_NAME: trial_run_name(record.number),
            TAG_STUDY: self.study_name,
            TAG_TRIAL: str(record.number),
            TAG_STATE: record.state.name,
            **record.tags,
        }
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, start_time=record.start_ms, tags=tags).info.run_id
        else:
            self.log_batch(run_id, tags=[tag(k, v) for k, v in tags.items()])
        now_ms = int(time.time() * 1000)
        metrics = [
            Metric(self._key(k), float(v), now_ms, 0) for k, v in record.metrics.items() if _finite(v)
        ]
        for name, curve in record.curves.items():
            key = self._key(name)
            metrics.extend(Metric(key, float(curve[step]), now_ms, step) for step in curve_steps(curve))
        params = [Param(self._key(k), safe_value(v)) for k, v in record.params.items()]
        self.log_batch(run_id, metrics=metrics, params=params)
        status = _STATUS_OF_STATE.get(record.state, "FAILED")
        self.client.set_terminated(run_id, status=status, end_time=record.end_ms)
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
        """Log in as few requests as MLflow's per-request limits allow.

        A trial's params, tags and metrics usually fit in one request, and
        each request is a database transaction on the tracking store.
        """
        metric_list = list(metrics)
        entities: list[Param | RunTag] = [*params, *tags]
        while metric_list or entities:
            chunk_entities = entities[:MAX_PARAMS_TAGS_PER_BATCH]
            room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(chunk_entities))
            chunk_metrics = metric_list[:room]
            entities, metric_list = entities[len(chunk_entities) :], metric_list[len(chunk_metrics) :]
            chunk_params = [e for e in chunk_entities if isinstance(e, Param)]
            chunk_tags = [e for e in chunk_entities if isinstance(e, RunTag)]
            try:
                self.client.log_batch(run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags)
            except MlflowException as exc:
                if exc.error_code != "INVALID_PARAMETER_VALUE" or not chunk_params:
                    raise
                # Stores log params before metrics, so the metrics of this request were not written.
                self._log_params_keeping_existing(run_id, chunk_params, chunk_tags)
                if chunk_metrics:
                    self.client.log_batch(run_id, metrics=chunk_metrics)

    def _log_params_keeping_existing(self, run_id: str, params: list[Param], tags: list[RunTag]) -> None:
        """Log params that the run does not hold yet; warn about keys logged with another value.

        MLflow never changes a logged param, so when another logger (such
        as autologging) already wrote a key, its value stays and the
        conflict is a warning.
        """
        existing = self.client.get_run(run_id).data.params
        fresh = [p for p in params if p.key not in existing]
        for param in params:
            if param.key in existing and existing[param.key] != param.value:
                _logger.warning(
                    "Param %r of run %s was already logged as %r by another logger; keeping it, "
                    "the tuner's value was %r.", param.key, run_id, existing[param.key], param.value,
                )
        self.client.log_batch(run_id, params=fresh, tags=tags)


def tag(key: str, value: Any) -> RunTag:
    return RunTag(key, safe_value(value, MAX_TAG_VAL_LENGTH))


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, MlflowException):
        return exc.error_code in _TRANSIENT_CODES
    return True


def _redact(exc: Exception) -> str:
    from mlflow_hpo.storage import redact_url

    return redact_url(str(exc))


def curve_steps(curve: Sequence[float]) -> list[int]:
    """Return evenly spaced steps of ``curve`` (first and last included) with finite values."""
    if len(curve) <= MAX_CURVE_POINTS:
        steps = list(range(len(curve)))
    else:
        stride = len(curve) / (MAX_CURVE_POINTS - 1)
        steps = sorted({min(len(curve) - 1, round(i * stride)) for i in range(MAX_CURVE_POINTS)})
    return [step for step in steps if _finite(curve[step])]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
