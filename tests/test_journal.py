"""The default journal storage: Optuna's file format, flushed to disk when a trial ends."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from mlflow_hpo.storage import TrialSyncedJournal, open_storage


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    for step in range(3):
        trial.report(x * step, step)
    trial.set_user_attr("note", "kept")
    return x * x


def test_plain_optuna_reads_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(_objective, n_trials=4)

    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))

    assert [t.params for t in plain.trials] == [t.params for t in study.trials]
    assert [t.intermediate_values for t in plain.trials] == [t.intermediate_values for t in study.trials]
    assert {t.user_attrs["note"] for t in plain.trials} == {"kept"}
    assert plain.best_value == study.best_value


def test_fsync_once_per_trial_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    storage = JournalStorage(TrialSyncedJournal(str(tmp_path / "study.journal")))
    study = optuna.create_study(study_name="s", storage=storage)
    monkeypatch.setattr(os, "fsync", counting_fsync)

    # Each trial writes its creation, a param, 3 reports, a user attribute and its end.
    study.optimize(_objective, n_trials=3)

    assert len(synced) == 3


def test_waits_for_a_plain_optuna_writer(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    backend = TrialSyncedJournal(str(path))
    plain_lock = JournalFileSymlinkLock(str(path))
    plain_lock.acquire()
    writer = threading.Thread(target=backend.append_logs, args=([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}],))

    writer.start()
    time.sleep(0.3)
    written_while_locked = path.read_bytes()
    plain_lock.release()
    writer.join(timeout=10)

    assert written_while_locked == b""
    assert not writer.is_alive()
    assert path.read_bytes().count(b"\n") == 1
