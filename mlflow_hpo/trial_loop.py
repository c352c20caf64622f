"""The optimization loop: claim a trial within the budget, evaluate it, tell the storage.

Optuna's ``study.optimize`` counts its budget per call, so several processes
on one study overshoot ``n_trials``. This loop claims each trial under a
study-wide lock instead: a trial is created only while fewer than
``n_trials`` trials are finished or running, counted over every process.
The same lock guards the check for trials whose process died: each claimed
trial records its owner (host, pid and process start time) before the lock
is released, so a RUNNING trial whose owner is gone on this host is failed
(and re-queued with ``retry_failed``). Trials on other hosts are left to
Optuna's heartbeat, which database storages record while a trial runs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from mlflow_hpo.storage import redact_url, study_lock

_logger = logging.getLogger(__name__)

# Trial system attribute: "host|pid|start ticks" of the process running it.
OWNER_ATTR = "mlflow_hpo:owner"
# Trial user attribute with the reason of a failure (shared with the mirror).
FAIL_REASON_ATTR = "fail_reason"
# Trial user attribute of a re-queued trial: the number of the trial it repeats.
RETRY_OF_ATTR = "retry_of"
_TAKEN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
_WAIT_POLL_SECONDS = 1.0

Objective = Callable[[optuna.Trial], float | Sequence[float]]
OnFinished = Callable[[optuna.Study, FrozenTrial], None]


def process_owner() -> str:
    """Return the owner record of this process: host, pid and start time."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    """Return the start time of ``pid`` in clock ticks since boot ("" where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # After the command name: field 3 is the state, field 22 the start time.
    if fields[0] == "Z":
        return "zombie"
    return fields[19]


def owner_alive(owner: str) -> bool | None:
    """Return whether the process of ``owner`` still runs; None when it runs on another host."""
    try:
        host, pid_text, ticks = owner.split("|")
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    current = _start_ticks(pid)
    if current == "zombie":
        return False
    return not (ticks and current and current != ticks)


class TrialLoop:
    """Runs trials of one study in ``n_jobs`` threads until the shared budget is used.

    Args:
        study: The study, loaded with its sampler and pruner.
        storage_url: URL or path of the study's storage, for the study lock.
        objective: Returns the trial's value (or values); ``optuna.TrialPruned``
            ends the trial PRUNED, any other exception or a non-finite
            value ends it FAILED with the reason, and the loop goes on.
        on_finished: Called with every trial this loop finishes, including
            trials of dead processes that it marks FAILED.
        n_trials: Finished trials the study should hold over all processes;
            None for no limit.
        timeout: Seconds after which no new trial starts; None for no limit.
        n_jobs: Threads that run trials in parallel.
        retry_failed: Re-queue the parameters of trials whose process died.
        heartbeat_failures: The ``heartbeat_stale_trial_callback`` that the
            storage was opened with, so trials failed by Optuna's heartbeat
            check get child runs too.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        storage_url: str,
        objective: Objective,
        on_finished: OnFinished,
        n_trials: int | None,
        timeout: float | None,
        n_jobs: int = 1,
        retry_failed: bool = False,
        heartbeat_failures: HeartbeatFailures | None = None,
    ) -> None:
        self.study = study
        self.storage_url = storage_url
        self.objective = objective
        self.on_finished = on_finished
        self.n_trials = n_trials
        self.timeout = timeout
        self.n_jobs = n_jobs
        self.retry_failed = retry_failed
        self.owner = process_owner()
        self.n_run = 0
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._count_lock = threading.Lock()
        self.heartbeat_failures = heartbeat_failures or HeartbeatFailures()
        self.heartbeat_failures.retry_failed = retry_failed

    def run(self) -> int:
        """Run trials until the budget or the timeout is used; return how many ran here."""
        self._deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with autologging_paused(warn=True):
            if self.n_jobs == 1:
                self._work()
            else:
                self._work_in_threads()
        return self.n_run

    def _work_in_threads(self) -> None:
        errors: list[BaseException] = []

        def work() -> None:
            try:
                self._work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(exc)
                self._stop.set()

        threads = [threading.Thread(target=work, name=f"mlflow-hpo-trials-{i}") for i in range(self.n_jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def wait_for_others(self) -> None:
        """Wait until no trial of the study is RUNNING, failing those whose process died."""
        announced = False
        while True:
            self._report(self._fail_dead_trials_locked())
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return
            if not announced:
                _logger.info("Waiting for %d trials that other processes are running.", len(running))
                announced = True
            time.sleep(_WAIT_POLL_SECONDS)

    def _work(self) -> None:
        while not self._stop.is_set():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return
            trial, failed = self._claim()
            self._report(failed)
            if trial is None:
                return
            with _heartbeat(self.study, trial._trial_id):
                frozen = self._run_one(trial)
            with self._count_lock:
                self.n_run += 1
            self.on_finished(self.study, frozen)

    def _claim(self) -> tuple[optuna.Trial | None, list[FrozenTrial]]:
        with study_lock(self.storage_url, self.study.study_name, "trials"):
            failed = self._fail_dead_trials()
            if self.n_trials is not None:
                taken = len(self.study.get_trials(deepcopy=False, states=_TAKEN_STATES))
                if taken >= self.n_trials:
                    return None, failed
            trial = self.study.ask()
            self.study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, self.owner)
        return trial, failed

    def _fail_dead_trials_locked(self) -> list[FrozenTrial]:
        with study_lock(self.storage_url, self.study.study_name, "trials"):
            return self._fail_dead_trials()

    def _fail_dead_trials(self) -> list[FrozenTrial]:
        """Mark FAILED every RUNNING trial whose process is gone; the caller holds the lock."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        failed = self.heartbeat_failures.drain()
        storage = self.study._storage
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.system_attrs.get(OWNER_ATTR)
            # Claims set the owner under the lock this caller holds, so a
            # RUNNING trial without one lost its process inside a claim.
            # NOTE: an owner on another host is never judged here. Database
            # storages fail its trial by heartbeat, but a journal file shared
            # across hosts keeps it RUNNING, so wait_for_others would wait on it.
            if owner is not None and owner_alive(owner) is not False:
                continue
            reason = f"the process that ran it ({owner or 'unknown'}) ended while the trial was running"
            try:
                storage.set_trial_user_attr(trial._trial_id, FAIL_REASON_ATTR, reason)
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            _logger.warning("Trial %d marked FAILED: %s.", trial.number, reason)
            frozen = storage.get_trial(trial._trial_id)
            if self.retry_failed:
                _enqueue_retry(self.study, frozen)
            failed.append(frozen)
        return failed

    def _report(self, failed: list[FrozenTrial]) -> None:
        for trial in failed:
            self.on_finished(self.study, trial)

    def _run_one(self, trial: optuna.Trial) -> FrozenTrial:
        try:
            result = self.objective(trial)
        except optuna.TrialPruned:
            return self.study.tell(trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - an error inside a trial fails only that trial
            return self._fail(trial, redact_url(str(exc)) or type(exc).__name__)
        except BaseException as exc:
            # KeyboardInterrupt or SystemExit: close the trial before this process stops.
            self._fail(trial, f"the process was interrupted ({type(exc).__name__})")
            raise
        values = [float(v) for v in result] if isinstance(result, Sequence) else [float(result)]
        if not all(math.isfinite(v) for v in values):
            reason = (
                f"the objective value is {', '.join(map(str, values))}, which cannot be ranked; "
                "the model diverged or the metric is undefined on a fold"
            )
            return self._fail(trial, reason)
        return self.study.tell(trial, values if len(values) > 1 else values[0])

    def _fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        if FAIL_REASON_ATTR not in trial.user_attrs:
            trial.set_user_attr(FAIL_REASON_ATTR, reason)
        return self.study.tell(trial, state=TrialState.FAIL)


class HeartbeatFailures:
    """Storage callback that collects trials failed for a stale heartbeat."""

    def __init__(self) -> None:
        self.retry_failed = False
        self._trials: list[FrozenTrial] = []
        self._lock = threading.Lock()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        _logger.warning("Trial %d marked FAILED: its heartbeat stopped.", trial.number)
        if self.retry_failed:
            _enqueue_retry(study, trial)
        with self._lock:
            self._trials.append(trial)

    def drain(self) -> list[FrozenTrial]:
        """Return the trials collected since the last call."""
        with self._lock:
            trials, self._trials = self._trials, []
        return trials


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    origin = trial.user_attrs.get(RETRY_OF_ATTR, trial.number)
    study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF_ATTR: origin})
    _logger.info("Trial %d re-queued with the same parameters (retry_failed=true).", trial.number)


def autologging_paused(*, warn: bool = False) -> contextlib.AbstractContextManager[None]:
    """Pause MLflow autologging, because mlflow_hpo owns the keys of its runs.

    Autologging would otherwise open a run per cross-validation fit and log
    the same hyperparameter names a second time. With ``warn``, a warning
    names the flavours whose autologging is on.
    """
    from mlflow.utils.autologging_utils import autologging_is_disabled, disable_autologging

    enabled = [flavor for flavor in ("sklearn", "lightgbm", "xgboost") if not autologging_is_disabled(flavor)]
    if enabled and warn:
        _logger.warning(
            "MLflow autologging is on for %s; it is paused while trials run because mlflow_hpo "
            "logs each trial's params and metrics to its child run itself.", ", ".join(enabled),
        )
    return disable_autologging()


@contextlib.contextmanager
def _heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    """Record Optuna heartbeats for ``trial_id`` while it runs, on storages that support them."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - a missed beat must not fail the trial
                _logger.warning("Heartbeat of trial id %d failed: %s", trial_id, redact_url(str(exc)))
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"mlflow-hpo-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
