"""The MLflow mirror of an Optuna study: one child run per finished trial.

Optuna's storage is the source of truth. Each finished trial becomes one
child run of the study's parent run, written by run id through
`MlflowClient` (never through the global active-run stack) from a
background thread, so tracking latency does not slow the trials down. A
child run is created only once its trial has finished.

After its first ``PROCESS_AFTER_TRIALS`` trials, a study's writes run in a
separate Python process (``mlflow_hpo._mirror_process``): MLflow's stores
spend tens of milliseconds of Python per child run, and in a thread of the
tuning process that time holds the interpreter lock that the trials need
between boosting rounds. If that process cannot start or dies, the writes
go back to the thread.

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
import os
import pickle
import queue
import re
import subprocess
import sys
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
# Trials that the mirror writes from its thread before it moves the writes
# to a separate process. Starting the process costs about 2 s of CPU (it
# imports MLflow), which a study of a few trials would not win back.
PROCESS_AFTER_TRIALS = 10
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
        process_after: int | None = PROCESS_AFTER_TRIALS,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self._writer = ChildRunWriter(
            client, experiment_id=experiment_id, parent_run_id=parent_run_id, study_name=study_name, lock=lock
        )
        self._process = (
            WriterProcess(
                {
                    "tracking_uri": client._tracking_client.tracking_uri,
                    "experiment_id": experiment_id,
                    "parent_run_id": parent_run_id,
                    "study_name": study_name,
                    "lock": lock,
                }
            )
            if process_after is not None and _picklable(lock)
            else None
        )
        self._process_after = process_after or 0
        self._written = 0
        self._mirrored: set[int] = set()
        self._lock = threading.Lock()
        self._queue: queue.Queue[TrialRecord | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="mlflow-hpo-mirror", daemon=True)
        self._errors = 0
        self._process_failed = False
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
    def key_mapping(self) -> dict[str, str]:
        """Original metric and param names that had to be rewritten, with their keys."""
        return self._writer.key_mapping

    @property
    def writer_pid(self) -> int:
        """Process id of the process that writes the next child run."""
        uses_process = self._process is not None and not self._process_failed and self._written >= self._process_after
        return self._process.start().pid if uses_process and self._process is not None else os.getpid()

    @property
    def errors(self) -> int:
        """Number of trials that could not be written."""
        return self._errors

    def flush(self) -> None:
        """Wait until every trial submitted so far is written or given up."""
        self._queue.join()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the writer thread and record the key mapping."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        if self._thread.is_alive():
            return
        if self._process is not None:
            self._process.close()
        if self.key_mapping == self._logged_mapping:
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
                self._queue.task_done()
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
            finally:
                self._queue.task_done()

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

    def _write(self, record: TrialRecord) -> None:
        if self._process is None or self._process_failed or self._written < self._process_after:
            self._writer.write(record)
            self._written += 1
            return
        try:
            mapping = self._process.write(record)
        except WriterProcessGone as exc:
            self._process_failed = True
            _logger.warning("The MLflow writer process stopped (%s); writing from this process instead.", exc)
            self._writer.write(record)
            return
        self._writer.key_mapping.update(mapping)

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Iterable[Metric] = (),
        params: Iterable[Param] = (),
        tags: Iterable[RunTag] = (),
    ) -> None:
        """Log to ``run_id`` from this process, within MLflow's per-request limits."""
        self._writer.log_batch(run_id, metrics=metrics, params=params, tags=tags)


class ChildRunWriter:
    """Writes one finished trial as a child run of ``parent_run_id``, under the study's mirror lock."""

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

    def _find_child(self, number: int) -> Any:
        query = f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{number}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=10)
        finished = [run for run in runs if run.info.status != "RUNNING"]
        candidates = finished or runs
        return candidates[0] if candidates else None

    def write(self, record: TrialRecord) -> None:
        """Write ``record`` as a child run unless a finished child of its trial exists."""
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

        A trial's params, tags and metrics usually fit in one request, which
        saves the round trips and run lookups of separate calls.
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


class WriterProcessGone(Exception):
    """The writer process failed to start or stopped responding."""


class RemoteWriteError(Exception):
    """A write that failed inside the writer process; ``transient`` as ``_is_transient`` judged it there."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class WriterProcess:
    """A Python process that writes child runs sent to it as pickles on its standard input.

    It is started with ``python -m`` on the first write, so it never
    imports the user's script, and it ends when its input closes, also
    when this process dies.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def write(self, record: TrialRecord) -> dict[str, str]:
        """Write ``record`` in the process; return the key mapping that it has built so far."""
        try:
            proc = self.start()
            assert proc.stdin is not None and proc.stdout is not None
            pickle.dump(record, proc.stdin)
            proc.stdin.flush()
            reply = pickle.load(proc.stdout)
        except (OSError, EOFError, pickle.PickleError) as exc:
            self.close()
            raise WriterProcessGone(str(exc) or type(exc).__name__) from exc
        for level, message in reply["logs"]:
            _logger.log(level, "%s", message)
        if reply["error"] is not None:
            raise RemoteWriteError(reply["error"], reply["transient"])
        mapping: dict[str, str] = reply["key_mapping"]
        return mapping

    def start(self) -> subprocess.Popen[bytes]:
        """Start the process unless it runs; it then imports MLflow while trials run."""
        if self._proc is not None:
            return self._proc
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow_hpo._mirror_process"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self._proc.stdin is not None
        pickle.dump(self._settings, self._proc.stdin)
        self._proc.stdin.flush()
        return self._proc

    def close(self) -> None:
        """Close the process's input and stop it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        # Every write has a reply, so the process is idle. Waiting for it
        # to tear down MLflow would only delay the study's end.
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - pickle raises many kinds of errors for unpicklable values
        return False
    return True


def tag(key: str, value: Any) -> RunTag:
    return RunTag(key, safe_value(value, MAX_TAG_VAL_LENGTH))


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, RemoteWriteError):
        return exc.transient
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
