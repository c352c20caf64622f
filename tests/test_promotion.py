"""The champion gate: aliases move only to a version that is not worse on the same held-out rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.cli import main
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.promotion import (
    CHALLENGER,
    CHAMPION,
    NOT_COMPARED,
    PROMOTED,
    REJECTED,
    TAG_CANDIDATE_SCORE,
    TAG_CHAMPION_SCORE,
    TAG_DECISION,
    TAG_HISTORY,
    TAG_PREVIOUS,
    TAG_REASON,
    TAG_REPLACED_BY,
    compare_scores,
    promote,
    run_gate,
)
from mlflow_hpo.study import tune
from tests._registry_tables import held_out_of, mixed_frame, plan_job, register, write_table
from tests.conftest import REPO_ROOT, subprocess_env


def _alias(client: mlflow.MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias("mixed", alias).version)


def _tags(client: mlflow.MlflowClient, version: str) -> dict[str, str]:
    return dict(client.get_model_version("mixed", version).tags)


def test_better_version_takes_champion(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    weak = register(job, weak=True)

    strong = register(job)

    assert weak.decision is not None
    assert weak.decision.outcome == PROMOTED
    assert strong.decision is not None
    assert strong.decision.outcome == PROMOTED
    assert _alias(client, CHAMPION) == strong.version
    assert _alias(client, CHALLENGER) == strong.version
    tags = _tags(client, strong.version)
    assert tags[TAG_DECISION] == PROMOTED
    assert tags[TAG_PREVIOUS] == weak.version
    assert float(tags[TAG_CHAMPION_SCORE]) == pytest.approx(0.5)
    assert float(tags[TAG_CANDIDATE_SCORE]) > 0.7


def test_worse_version_is_rejected(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    strong = register(job)

    weak = register(job, weak=True)

    assert weak.decision is not None
    assert weak.decision.outcome == REJECTED
    assert not weak.decision.is_champion
    assert _alias(client, CHAMPION) == strong.version
    assert _alias(client, CHALLENGER) == weak.version
    tags = _tags(client, weak.version)
    assert tags[TAG_DECISION] == REJECTED
    assert tags[TAG_PREVIOUS] == strong.version
    assert "more than the margin 0" in tags[TAG_REASON]
    assert f"`{CHAMPION}` stays on version {strong.version}" in "\n".join(weak.summary_lines())
    assert {v.current_stage for v in client.search_model_versions("name = 'mixed'")} == {"None"}


def test_gate_rerun_changes_nothing(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    strong = register(job)
    weak = register(job, weak=True)
    before = {v: _tags(client, v) for v in (strong.version, weak.version)}
    held_out = held_out_of(job)

    again = run_gate(client, "mixed", weak.version, held_out)
    kept = run_gate(client, "mixed", strong.version, held_out)

    assert again.outcome == REJECTED
    assert kept.outcome == "kept"
    assert {v: _tags(client, v) for v in (strong.version, weak.version)} == before
    assert _alias(client, CHAMPION) == strong.version


def test_margin_admits_slightly_worse(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path, promote_margin=0.6)
    strong = register(job)

    weak = register(job, weak=True)

    assert weak.decision is not None
    assert weak.decision.outcome == PROMOTED
    assert weak.decision.previous_champion == strong.version
    assert _alias(client, CHAMPION) == weak.version


@pytest.mark.parametrize(
    ("candidate", "champion", "direction", "margin", "outcome"),
    [
        (0.90, 0.91, "maximize", 0.0, REJECTED),
        (0.90, 0.91, "maximize", 0.02, PROMOTED),
        (0.91, 0.91, "maximize", 0.0, PROMOTED),
        (1.10, 1.00, "minimize", 0.05, REJECTED),
        (1.04, 1.00, "minimize", 0.05, PROMOTED),
        (float("nan"), 0.5, "maximize", 0.0, REJECTED),
        (0.5, float("nan"), "maximize", 0.0, PROMOTED),
    ],
)
def test_compare_scores_follows_direction(
    candidate: float, champion: float, direction: str, margin: float, outcome: str
) -> None:
    decided, _ = compare_scores(candidate, champion, direction=direction, margin=margin, metric="m")

    assert decided == outcome


def test_forced_promotion_records_reason(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    strong = register(job)
    weak = register(job, weak=True)

    decision = promote("mixed", version=weak.version, force=True, reason="roll back to the baseline")

    assert decision.outcome == "forced"
    assert _alias(client, CHAMPION) == weak.version
    tags = _tags(client, weak.version)
    assert tags[TAG_DECISION] == "forced"
    assert tags[TAG_REASON] == "forced: roll back to the baseline"
    assert tags[TAG_PREVIOUS] == strong.version
    assert _tags(client, strong.version)[TAG_REPLACED_BY] == weak.version

    promote("mixed", version=strong.version, force=True, reason="restore the tuned model")

    assert _alias(client, CHAMPION) == strong.version
    assert TAG_REPLACED_BY not in _tags(client, strong.version)
    assert _tags(client, weak.version)[TAG_REPLACED_BY] == strong.version
    strong_tags = _tags(client, strong.version)
    assert strong_tags[TAG_DECISION] == "forced"
    (first_decision,) = json.loads(strong_tags[TAG_HISTORY])
    assert first_decision["decision"] == PROMOTED
    assert first_decision["reason"] == "no version had the alias"


def test_force_without_reason_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="force=true needs a reason"):
        promote("mixed", force=True, reason=" ")


def test_gate_without_data_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the champion gate needs held-out rows; pass data="):
        promote("mixed")


def test_promote_command_runs_gate_on_data(
    tmp_path: Path, client: mlflow.MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    job = plan_job(tmp_path)
    weak = register(job, weak=True)
    strong = register(job, trial=1)
    client.set_registered_model_alias("mixed", CHAMPION, weak.version)
    client.set_registered_model_alias("mixed", CHALLENGER, strong.version)
    held_out = write_table(tmp_path, mixed_frame(120, seed=7), name="held_out.parquet")

    status = main(["promote", "--model_name", "mixed", "--data", str(held_out)])

    assert status == 0
    expected = f"mixed version {strong.version}: `{CHAMPION}` moved from version {weak.version} to version {strong.version}"
    assert capsys.readouterr().out.strip().startswith(expected)
    assert _alias(client, CHAMPION) == strong.version
    assert _tags(client, strong.version)["mlflow_hpo.promotion.held_out_rows"] == "120"


def test_promote_unknown_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["promote", "--model_name", "nothing-here", "--data", "sklearn:iris"])

    assert status == 2
    assert "registered model 'nothing-here' not found" in capsys.readouterr().err


@pytest.mark.slow
def test_two_studies_leave_champion_on_better(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    path = write_table(tmp_path)
    options = {
        "data": str(path), "target": "y", "model": "logistic_regression", "n_folds": 2, "strategy": "random",
        "pruner": "none", "importance": "none", "register_model": "mixed",
    }

    first = tune(TuneConfig(n_trials=1, **options))
    second = tune(TuneConfig(n_trials=4, **options))

    assert (first.registered_version, second.registered_version) == ("1", "2")
    better = "2" if second.test_score >= first.test_score else "1"
    assert _alias(client, CHAMPION) == better
    assert _alias(client, CHALLENGER) == "2"
    tags = _tags(client, "2")
    assert tags[TAG_DECISION] == (PROMOTED if better == "2" else REJECTED)
    assert tags[TAG_PREVIOUS] == "1"
    assert float(tags[TAG_CANDIDATE_SCORE]) == pytest.approx(second.test_score)
    assert float(tags[TAG_CHAMPION_SCORE]) == pytest.approx(first.test_score)
    summary = Path(mlflow.artifacts.download_artifacts(run_id=second.parent_run_id, artifact_path="summary.md"))
    assert "Champion gate:" in summary.read_text()

    records = [
        {"x": 0.4, "color": "red", "count": 2, "flag": True, "k": 5},
        {"x": -0.7, "color": "green", "count": None, "flag": None, "k": 2},
    ]
    champion = mlflow.pyfunc.load_model(f"models:/mixed@{CHAMPION}")
    predictions = np.asarray(champion.predict(pd.DataFrame(records)))
    assert set(predictions) <= {"yes", "no"}
    assert len(predictions) == 2


@pytest.mark.slow
def test_gate_other_split_not_compared(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    path = write_table(tmp_path)
    options = {
        "data": str(path), "target": "y", "model": "logistic_regression", "n_folds": 2, "strategy": "random",
        "pruner": "none", "importance": "none", "register_model": "mixed", "n_trials": 1,
    }

    tune(TuneConfig(study_name="split-a", **options))
    second = tune(TuneConfig(study_name="split-b", seed=7, **options))

    assert second.registered_version == "2"
    assert _alias(client, CHAMPION) == "1"
    assert _alias(client, CHALLENGER) == "2"
    tags = _tags(client, "2")
    assert tags[TAG_DECISION] == NOT_COMPARED
    assert tags[TAG_CHAMPION_SCORE] == ""
    assert tags[TAG_REASON].startswith("version 1 was trained on another split of the same table")
    assert "mlflow-hpo promote --model_name mixed --data <rows>" in tags[TAG_REASON]
    summary = Path(mlflow.artifacts.download_artifacts(run_id=second.parent_run_id, artifact_path="summary.md"))
    assert "`champion` stays on version 1 without a comparison" in summary.read_text()


@pytest.mark.slow
def test_mlflow_run_promote_forces_version(
    tmp_path: Path, tracking_store: str, client: mlflow.MlflowClient
) -> None:
    job = plan_job(tmp_path)
    strong = register(job)
    weak = register(job, weak=True)
    command = [
        sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "-e", "promote", "--env-manager", "local",
        "-P", "model_name=mixed", "-P", f"version={weak.version}", "-P", "force=true",
        "-P", "reason=baseline for an A/B test",
    ]

    completed = subprocess.run(
        command, cwd=tmp_path, env=subprocess_env(tracking_store), capture_output=True, text=True, timeout=600
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    moved = f"`{CHAMPION}` moved from version {strong.version} to version {weak.version} without the gate"
    assert f"mixed version {weak.version}: {moved}" in completed.stdout
    assert _alias(client, CHAMPION) == weak.version
    assert _tags(client, weak.version)[TAG_PREVIOUS] == strong.version
    assert _tags(client, weak.version)[TAG_REASON] == "forced: baseline for an A/B test"
    promote_runs = client.search_runs(["0"], filter_string="tags.`mlflow_hpo.promotion.decision` = 'forced'")
    assert len(promote_runs) == 1
    assert promote_runs[0].info.status == "FINISHED"
