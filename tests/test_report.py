"""Report artifacts on the parent run, and `mlflow-hpo report` rebuilding them from the storage."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.cli import main
from mlflow_hpo.cv import CV_ATTR
from mlflow_hpo.report import ReportContext, replay_command, write_report
from mlflow_hpo.storage import open_storage, storage_url

REPORT_FILES = {
    "best_config.json",
    "trials.csv",
    "top_trials.md",
    "summary.md",
    "importance.json",
    "study.json",
    "plots/optimization_history.png",
    "plots/optimization_history.html",
    "plots/importance.png",
    "plots/parallel_coordinate.html",
    "plots/parallel_coordinate.png",
    "plots/slice.png",
    "plots/slice.html",
}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _toy_study(direction: str) -> optuna.Study:
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -3.0, 3.0)
        trial.suggest_int("n", 1, 4)
        trial.set_user_attr(CV_ATTR, {"std": 0.01, "duration_s": 0.5})
        if trial.number == 1:
            trial.report(9.0, 3)
            raise optuna.TrialPruned()
        return x * x

    study.optimize(objective, n_trials=12)
    return study


def _toy_context(direction: str) -> ReportContext:
    return ReportContext(
        study_name="toy",
        objectives=["loss"],
        directions=[direction],
        config={"model": "ridge", "seed": "0", "importance": "ped_anova"},
        param_names=["x", "n"],
    )


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_top_trials_ranked_by_direction(tmp_path: Path, direction: str) -> None:
    study = _toy_study(direction)

    write_report(study, _toy_context(direction), tmp_path)

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if direction == "minimize" else max(complete, key=lambda t: t.value)
    first_row = (tmp_path / "top_trials.md").read_text().splitlines()[6]
    assert first_row.startswith(f"| 1 | {best.number} | ")
    assert _files(tmp_path) >= REPORT_FILES


def test_trials_csv_lists_every_trial(tmp_path: Path) -> None:
    study = _toy_study("minimize")

    write_report(study, _toy_context("minimize"), tmp_path)
    frame = pd.read_csv(tmp_path / "trials.csv")

    assert list(frame.columns[:7]) == ["number", "state", "value", "cv_std", "duration_s", "pruned_at_step", "fail_reason"]
    assert {"param_x", "param_n"} <= set(frame.columns)
    assert len(frame) == 12
    pruned = frame[frame["state"] == "PRUNED"].iloc[0]
    assert pruned["number"] == 1
    assert pruned["pruned_at_step"] == 3


def test_report_without_refit_says_so(tmp_path: Path) -> None:
    write_report(_toy_study("minimize"), _toy_context("minimize"), tmp_path)

    summary = (tmp_path / "summary.md").read_text()

    assert "No final model was refit for this study" in summary
    assert "- Trials by state: COMPLETE: 11, PRUNED: 1" in summary


def test_replay_command_rebuilds_same_config() -> None:
    config = TuneConfig(model="xgboost", n_trials=50, seed=7, metric="roc_auc,latency", select="knee|latency<3")
    ctx = ReportContext(study_name="s", objectives=["roc_auc"], directions=["maximize"], config=config.to_params())

    words = shlex.split(replay_command(ctx, trial_number=12))
    values = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-P")

    assert words[:5] == ["mlflow", "run", ".", "--env-manager", "local"]
    assert values["n_trials"] == "13"
    assert values["study_name"] == "s-replay"
    assert values["register_model"] == ""
    assert TuneConfig.from_mapping(values) == config.replace(n_trials=13, study_name="s-replay", register_model="")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small single-objective study, shared by the end-to-end tests below."""
    folder = tmp_path_factory.mktemp("report-study")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    config = TuneConfig(
        model="logistic_regression", n_trials=6, n_folds=3, cv="stratified", register_model="", study_name="report-e2e"
    )
    result = tune(config)
    client = MlflowClient(uri)
    artifacts = Path(client.download_artifacts(result.parent_run_id, "", str(folder / "artifacts")))
    return {"uri": uri, "result": result, "artifacts": artifacts, "folder": folder}


@pytest.fixture
def study_client(finished_study: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", finished_study["uri"])
    mlflow.set_tracking_uri(finished_study["uri"])
    return MlflowClient(finished_study["uri"])


@pytest.mark.slow
def test_single_objective_parent_has_every_artifact(finished_study: dict[str, Any], study_client: MlflowClient) -> None:
    result = finished_study["result"]
    artifacts = finished_study["artifacts"]
    parent = study_client.get_run(result.parent_run_id)

    assert _files(artifacts) >= REPORT_FILES
    assert "pareto_front.csv" not in _files(artifacts)
    importance = json.loads((artifacts / "importance.json").read_text())
    assert importance["evaluator"] == "PedAnovaImportanceEvaluator"
    assert {f"importance_{name}" for name in importance["importances"]} <= set(parent.data.metrics)


@pytest.mark.slow
def test_best_config_holds_cv_and_replay(finished_study: dict[str, Any], study_client: MlflowClient) -> None:
    result = finished_study["result"]
    best = json.loads((finished_study["artifacts"] / "best_config.json").read_text())

    assert best["params"] == result.best_params
    assert best["cv"]["mean"] == pytest.approx(result.best_cv_mean)
    assert best["cv"]["std"] == pytest.approx(result.best_cv_std)
    assert best["cv"]["n_splits"] == len(best["cv"]["fold_scores"]) == 3
    assert best["replay_command"].startswith("mlflow run . --env-manager local -P ")
    assert f"-P n_trials={best['trial_number'] + 1}" in best["replay_command"]


@pytest.mark.slow
def test_summary_states_how_study_ran(finished_study: dict[str, Any], study_client: MlflowClient) -> None:
    summary = (finished_study["artifacts"] / "summary.md").read_text()
    result = finished_study["result"]
    tags = study_client.get_run(result.parent_run_id).data.tags

    assert f"- Strategy: {tags['mlflow_hpo.strategy']} ({tags['mlflow_hpo.strategy_reason']})" in summary
    assert f"- Sampler: {tags['mlflow_hpo.sampler']}, seed 42" in summary
    assert "- Pruner: " in summary
    assert "- Trials by state: COMPLETE: " in summary
    assert "- Wall time: " in summary
    assert f"| held-out test roc_auc (refit winner, used once) | {result.test_score:.6g} |" in summary
    assert "| CV minus held-out |" in summary


@pytest.mark.slow
def test_report_command_rebuilds_folder(finished_study: dict[str, Any], study_client: MlflowClient, tmp_path: Path) -> None:
    artifacts = finished_study["artifacts"]
    output = tmp_path / "rebuilt"

    status = main(["report", "--study-name", "report-e2e", "--output", str(output)])

    assert status == 0
    assert _files(output) >= REPORT_FILES
    for name in ("best_config.json", "trials.csv", "top_trials.md", "importance.json"):
        assert (output / name).read_text() == (artifacts / name).read_text(), name


@pytest.mark.slow
def test_report_command_logs_to_run(finished_study: dict[str, Any], study_client: MlflowClient) -> None:
    run = study_client.create_run("0")

    status = main(["report", "--study-name", "report-e2e", "--run-id", run.info.run_id])

    logged = {f.path for f in study_client.list_artifacts(run.info.run_id)}
    metrics = study_client.get_run(run.info.run_id).data.metrics
    study_client.set_terminated(run.info.run_id)
    assert status == 0
    assert {"best_config.json", "trials.csv", "summary.md", "study.json", "plots"} <= logged
    assert any(key.startswith("importance_") for key in metrics)


def test_report_command_unknown_study_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status = main(["report", "--study-name", "missing", "--output", str(tmp_path / "out")])

    assert status == 2
    assert "study 'missing' not found in storage" in capsys.readouterr().err


def test_report_command_handles_foreign_study(tmp_path: Path) -> None:
    storage = open_storage(storage_url(mlflow.get_tracking_uri()))
    study = optuna.create_study(storage=storage, study_name="foreign", sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0) ** 2, n_trials=6)

    status = main(["report", "--study-name", "foreign", "--output", str(tmp_path / "out")])

    summary = (tmp_path / "out" / "summary.md").read_text()
    best = json.loads((tmp_path / "out" / "best_config.json").read_text())
    assert status == 0
    assert "No final model was refit for this study" in summary
    assert "- Sampler: unknown (the study was not finished by mlflow-hpo)" in summary
    assert best["objectives"] == {"value": "minimize"}
    assert (tmp_path / "out" / "plots" / "optimization_history.png").exists()


def test_summary_optuna_pruner_class() -> None:
    from mlflow_hpo.pruning import FoldWindowMedianPruner
    from mlflow_hpo.report._context import _pruner_class

    window = FoldWindowMedianPruner(stride=1, n_startup_trials=5, n_warmup_steps=1)

    assert _pruner_class(window) == "Optuna MedianPruner through mlflow_hpo.pruning.FoldWindowMedianPruner"
    assert _pruner_class(optuna.pruners.NopPruner()) == "Optuna NopPruner"
