"""SIGKILL at several points of a study, then resume: nothing lost, nothing doubled, nothing RUNNING."""

from __future__ import annotations

import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo.storage import default_storage_url, open_storage
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL
from tests._servers import fast_cli_args, study_runs
from tests.conftest import subprocess_env

N_TRIALS = 50
STUDY = "killed"


def _trials(journal: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=STUDY, storage=open_storage(journal)).trials
    except KeyError:
        return []


def _run(command: list[str], env: dict[str, str], log: Path, kill_when: Callable[[str], bool] | None) -> int:
    """Run ``command``; SIGKILL it as soon as ``kill_when`` is true for an output line or a poll."""
    with open(log, "ab") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                sink.write(raw)
                lines.put(raw.decode(errors="replace"))
            lines.put(None)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while kill_when is not None:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if kill_when(line):
                process.send_signal(signal.SIGKILL)
                break
        status = process.wait(timeout=600)
        reader.join(timeout=30)
        return status


@pytest.mark.slow
def test_killed_study_resumes_to_total(tracking_store: str, tmp_path: Path, client: MlflowClient) -> None:
    journal = default_storage_url(tracking_store)
    env = subprocess_env(tracking_store)
    command = [sys.executable, "-m", "mlflow_hpo", "tune", *fast_cli_args(study_name=STUDY, n_trials=N_TRIALS)]
    log = tmp_path / "runs.log"
    figures: list[str] = []

    def during_trial(_line: str) -> bool:
        trials = _trials(journal)
        finished = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        return len(finished) >= 8 and bool(running)

    assert _run(command, env, log, during_trial) == -signal.SIGKILL
    trials = _trials(journal)
    figures.append(f"kill 1: {len(trials)} trials, {sum(t.state.name == 'RUNNING' for t in trials)} RUNNING")

    seen = {"count": 0}

    def between_trials(line: str) -> bool:
        if " COMPLETE: value " in line:
            seen["count"] += 1
        return seen["count"] >= 6

    assert _run(command, env, log, between_trials) == -signal.SIGKILL
    trials = _trials(journal)
    figures.append(f"kill 2: {len(trials)} trials, {sum(t.state.name == 'RUNNING' for t in trials)} RUNNING")

    def during_report(line: str) -> bool:
        return "mlflow_hpo.finalize: Best trial" in line

    assert _run(command, env, log, during_report) == -signal.SIGKILL
    trials = _trials(journal)
    figures.append(f"kill 3: {len(trials)} trials, {sum(t.state.is_finished() for t in trials)} finished")

    started = time.monotonic()
    status = _run(command, env, log, None)
    figures.append(f"final resume: {time.monotonic() - started:.1f} s")
    logging.getLogger(__name__).info("kill test figures: %s", "; ".join(figures))
    assert status == 0, log.read_text(errors="replace")[-3000:]

    trials = _trials(journal)
    assert len(trials) == N_TRIALS
    assert all(t.state.is_finished() for t in trials)
    runs = study_runs(client, STUDY)
    parents = [r for r in runs if r.data.tags.get("mlflow_hpo.role") == "study"]
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == list(range(N_TRIALS))
    states = {t.number: t.state.name for t in trials}
    assert all(r.data.tags["mlflow_hpo.trial_state"] == states[int(r.data.tags[TAG_TRIAL])] for r in children)
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    assert [(r.info.run_name, r.data.tags.get(TAG_TRIAL)) for r in running] == []
