"""Multi-objective studies: objective names and directions, the select rule, Pareto tags, registration."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo._errors import ConfigError
from mlflow_hpo.cli import main
from mlflow_hpo.multi_objective import (
    TAG_PARETO,
    measure_latency,
    pareto_mask,
    pareto_ranks,
    parse_select,
    resolve_secondary,
    select_trial,
)
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.study import plan
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL

NAMES = ["roc_auc", "latency"]
DIRECTIONS = ["maximize", "minimize"]


def _trials(points: list[tuple[float, float]]) -> list[optuna.trial.FrozenTrial]:
    return [
        optuna.trial.create_trial(values=list(point), params={}, distributions={}) for point in points
    ]


def _numbered(points: list[tuple[float, float]]) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(directions=DIRECTIONS)
    study.add_trials(_trials(points))
    return study.get_trials()


# (roc_auc, latency): trials 1, 2 and 3 form the Pareto front; 0 and 4 are dominated.
POINTS = [(0.90, 5.0), (0.95, 1.0), (0.97, 2.0), (0.99, 9.0), (0.94, 3.0)]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("roc_auc,latency", [("latency", "minimize")]),
        ("roc_auc,model_size", [("model_size", "minimize")]),
        ("roc_auc,accuracy,latency", [("accuracy", "maximize"), ("latency", "minimize")]),
    ],
)
def test_secondary_directions_derived_from_names(metric: str, expected: list[tuple[str, str]]) -> None:
    secondary = resolve_secondary(TuneConfig(metric=metric), "binary")

    assert [(s.name, s.direction) for s in secondary] == expected


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        ("roc_auc,speed", r"metric name 'speed' .* is neither a scikit-learn scorer nor a built-in"),
        ("latency,roc_auc", r"first objective must be a scikit-learn scorer"),
        ("roc_auc,latency,latency", r"names latency more than once"),
        ("roc_auc,r2", r"metric name 'r2' .* scores regression"),
    ],
)
def test_bad_metric_list_rejected(metric: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_secondary(TuneConfig(metric=metric), "binary")


def test_multi_objective_plan_switches_pruning_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlflow_hpo.multi_objective"):
        job = plan(TuneConfig(metric="roc_auc,latency", pruner="median", n_trials=2))

    assert job.config.pruner == "none"
    assert [s.name for s in job.secondary] == ["latency"]
    assert "pruner='median' is switched off" in caplog.text


def test_bad_select_rejected_before_any_run() -> None:
    with pytest.raises(ConfigError, match=r"select='max:latency' asks for max:latency, but the study minimizes"):
        plan(TuneConfig(metric="roc_auc,latency", select="max:latency", n_trials=2))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_staged_multi_objective_rejected() -> None:
    with pytest.raises(ConfigError, match=r"staged=true picks the first stage's best trial by one score"):
        plan(TuneConfig(metric="roc_auc,latency", staged=True, n_trials=2))


def test_select_on_single_objective_rejected() -> None:
    with pytest.raises(ConfigError, match=r"select='max:roc_auc' applies to multi-objective studies"):
        plan(TuneConfig(metric="roc_auc", select="max:roc_auc", n_trials=2))


@pytest.mark.parametrize(
    ("text", "goal", "target", "bounds"),
    [
        ("knee", "knee", "", []),
        ("", "knee", "", []),
        ("max:roc_auc", "max", "roc_auc", []),
        ("max:roc_auc|latency<5", "max", "roc_auc", ["latency<5"]),
        ("latency<=2.5 | roc_auc>0.9", "knee", "", ["latency<=2.5", "roc_auc>0.9"]),
        ("min:latency|roc_auc>=0.95", "min", "latency", ["roc_auc>=0.95"]),
    ],
)
def test_select_syntax_parsed(text: str, goal: str, target: str, bounds: list[str]) -> None:
    rule = parse_select(text, NAMES, DIRECTIONS)

    assert rule.goal == goal
    assert rule.target == target
    assert [str(c) for c in rule.constraints] == bounds


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("best", r"invalid part 'best'"),
        ("knee|max:roc_auc", r"invalid part 'max:roc_auc'"),
        ("max:accuracy", r"optimizes 'accuracy', which is not an objective"),
        ("latency<fast", r"bounds latency by 'fast', which is not a number"),
        ("size<5", r"bounds 'size', which is not an objective"),
        ("knee:roc_auc", r"invalid part 'knee:roc_auc'"),
    ],
)
def test_bad_select_syntax_rejected(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_select(text, NAMES, DIRECTIONS)


def test_pareto_mask_and_ranks() -> None:
    values = np.array(POINTS)

    assert pareto_mask(values, DIRECTIONS).tolist() == [False, True, True, True, False]
    assert pareto_ranks(values, DIRECTIONS).tolist() == [2, 0, 0, 0, 1]


def test_knee_picks_balanced_front_trial() -> None:
    selection = select_trial(_numbered(POINTS), NAMES, DIRECTIONS, parse_select("knee", NAMES, DIRECTIONS))

    assert selection.trial.number == 2
    assert "knee of the 3-trial Pareto front" in selection.reason


def test_max_under_bound_picks_best_feasible() -> None:
    rule = parse_select("max:roc_auc|latency<5", NAMES, DIRECTIONS)

    selection = select_trial(_numbered(POINTS), NAMES, DIRECTIONS, rule)

    assert selection.trial.number == 2
    assert "among the 3 trials with latency<5" in selection.reason


def test_unmet_bound_falls_back_with_reason() -> None:
    rule = parse_select("max:roc_auc|latency<0.5", NAMES, DIRECTIONS)

    selection = select_trial(_numbered(POINTS), NAMES, DIRECTIONS, rule)

    assert selection.trial.number == 3
    assert "no trial met latency<0.5" in selection.reason


def test_latency_measured_per_thousand_rows() -> None:
    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    model = LogisticRegression().fit(X, np.arange(20) % 2)

    latency = measure_latency(model, X)

    assert 0.0 < latency < 1000.0


@pytest.fixture(scope="module")
def two_objective_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One roc_auc,latency study through the command line, shared by the tests below."""
    folder = tmp_path_factory.mktemp("two-objective")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    status = main([
        "tune", "--model", "logistic_regression", "--metric", "roc_auc,latency", "--n_trials", "8", "--n_folds", "3", "--cv", "stratified",
        "--study_name", "two-objectives", "--register_model", "cancer-mo", "--pruner", "median",
        "--select", "max:roc_auc|latency<1000",
    ])
    client = MlflowClient(uri)
    parent = client.search_runs(["0"], filter_string="tags.`mlflow_hpo.role` = 'study'")[0]
    artifacts = Path(client.download_artifacts(parent.info.run_id, "", str(folder / "artifacts")))
    storage = open_storage(storage_url(uri))
    study = optuna.load_study(study_name="two-objectives", storage=storage)
    return {"uri": uri, "status": status, "parent": parent, "artifacts": artifacts, "study": study}


@pytest.fixture
def mo_client(two_objective_study: dict[str, Any]) -> MlflowClient:
    mlflow.set_tracking_uri(two_objective_study["uri"])
    return MlflowClient(two_objective_study["uri"])


@pytest.mark.slow
def test_pareto_front_written_to_parent(two_objective_study: dict[str, Any]) -> None:
    artifacts = two_objective_study["artifacts"]
    study = two_objective_study["study"]

    assert two_objective_study["status"] == 0
    front = pd.read_csv(artifacts / "pareto_front.csv")
    assert sorted(front["number"]) == sorted(t.number for t in study.best_trials)
    assert list(front.columns[:4]) == ["number", "selected", "value_roc_auc", "latency_ms_per_1000_rows"]
    assert (artifacts / "plots" / "pareto_front.png").stat().st_size > 0
    assert (artifacts / "plots" / "pareto_front.html").stat().st_size > 0
    assert two_objective_study["parent"].data.metrics["pareto_front_size"] == len(front)


@pytest.mark.slow
def test_pareto_children_tagged(two_objective_study: dict[str, Any], mo_client: MlflowClient) -> None:
    parent_id = two_objective_study["parent"].info.run_id
    front = {t.number for t in two_objective_study["study"].best_trials}

    children = mo_client.search_runs(["0"], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'")
    tagged = {int(r.data.tags[TAG_TRIAL]) for r in children if r.data.tags.get(TAG_PARETO) == "true"}

    assert len(children) == 8
    assert tagged == front
    assert all("latency_ms_per_1000_rows" in r.data.metrics for r in children)


@pytest.mark.slow
def test_registered_model_follows_select_rule(two_objective_study: dict[str, Any], mo_client: MlflowClient) -> None:
    study = two_objective_study["study"]
    feasible = [t for t in study.best_trials if t.values[1] < 1000]
    expected = max(feasible, key=lambda t: t.values[0]).number

    version = mo_client.search_model_versions("name = 'cancer-mo'")[0]
    summary = (two_objective_study["artifacts"] / "summary.md").read_text()
    best_config = json.loads((two_objective_study["artifacts"] / "best_config.json").read_text())

    assert version.tags["mlflow_hpo.trial_number"] == str(expected)
    assert f"select=max:roc_auc|latency<1000 chose trial {expected}" in summary
    assert f"- Pareto front: {len(study.best_trials)} trials" in summary
    assert best_config["trial_number"] == expected
    assert set(best_config["objective_values"]) == {"roc_auc", "latency"}


def test_resume_with_other_directions_rejected() -> None:
    storage = open_storage(storage_url(mlflow.get_tracking_uri()))
    optuna.create_study(storage=storage, study_name="one-objective", direction="maximize")

    with pytest.raises(ConfigError, match=r"created with directions \['maximize'\], but metric='roc_auc,latency'"):
        tune(TuneConfig(metric="roc_auc,latency", study_name="one-objective", n_trials=2, register_model=""))
    assert mlflow.search_runs(search_all_experiments=True).empty
