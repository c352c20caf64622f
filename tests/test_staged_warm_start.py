"""Staged tuning and warm start, end to end on a small linear model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo._errors import ConfigError
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL
from mlflow_hpo.warm_start import WARM_START_ATTR

FAST = {"model": "logistic_regression", "data": "sklearn:iris", "cv": "stratified", "n_folds": 3, "register_model": ""}

TIERED = {
    "params": {
        "C": {"type": "float", "low": 0.01, "high": 10.0, "log": True, "tier": 1},
        "class_weight": {"choices": [None, "balanced"], "tier": 2},
        "fit_intercept": {"choices": [True, False], "tier": 2},
    }
}


def _write(path: Path, content: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def _study(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url(mlflow.get_tracking_uri())))


@pytest.mark.slow
def test_staged_tuning_fixes_stage_one_winner(tmp_path: Path, client: MlflowClient) -> None:
    config = TuneConfig(
        space=_write(tmp_path / "space.yaml", TIERED), staged=True, strategy="tpe", n_trials=6, study_name="staged", **FAST
    )

    result = tune(config)

    trials = _study("staged").get_trials()
    stage1 = [t for t in trials if t.user_attrs["stage"] == 1]
    stage2 = [t for t in trials if t.user_attrs["stage"] == 2]
    assert len(stage1) == 3
    assert len(stage2) == 3
    assert all(set(t.params) == {"C"} for t in stage1)
    best_stage1 = max(stage1, key=lambda t: float(t.value))  # type: ignore[arg-type]
    assert all(t.params["C"] == best_stage1.params["C"] for t in stage2)
    assert all(set(t.params) == {"C", "class_weight", "fit_intercept"} for t in stage2)

    runs = client.search_runs(["0"], filter_string=f"tags.`{TAG_PARENT}` = '{result.parent_run_id}'")
    stage_tags = sorted(run.data.tags["mlflow_hpo.stage"] for run in runs if TAG_TRIAL in run.data.tags)
    assert stage_tags == ["1", "1", "1", "2", "2", "2"]


def test_staged_needs_two_tiers(tmp_path: Path) -> None:
    flat = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}}
    config = TuneConfig(space=_write(tmp_path / "space.yaml", flat), staged=True, strategy="tpe", **FAST)

    with pytest.raises(ConfigError, match=r"staged=true needs parameters of tier 1 and of a higher tier"):
        tune(config)


def test_staged_with_grid_rejected(tmp_path: Path) -> None:
    grid = {"params": {"C": {"choices": [0.1, 1.0]}, "class_weight": {"choices": [None, "balanced"], "tier": 2}}}
    config = TuneConfig(space=_write(tmp_path / "space.yaml", grid), staged=True, strategy="grid", **FAST)

    with pytest.raises(ConfigError, match=r"strategy=grid runs every combination once, so staged=true"):
        tune(config)


@pytest.mark.slow
def test_warm_start_runs_best_configs_first(tmp_path: Path) -> None:
    space = _write(tmp_path / "space.yaml", TIERED)
    tune(TuneConfig(space=space, strategy="random", n_trials=6, study_name="earlier", **FAST))
    earlier = sorted(_study("earlier").get_trials(), key=lambda t: float(t.value), reverse=True)  # type: ignore[arg-type]

    tune(TuneConfig(space=space, strategy="tpe", n_trials=3, study_name="later", warm_start="earlier", **FAST))

    later = _study("later").get_trials()
    assert len(later) == 3
    assert [t.params for t in later] == [t.params for t in earlier[:3]]
    assert [t.user_attrs[WARM_START_ATTR] for t in later] == [f"earlier#{t.number}" for t in earlier[:3]]


@pytest.mark.slow
def test_warm_start_skips_configs_outside_space(tmp_path: Path) -> None:
    wide = {"params": {"C": {"choices": [0.1, 1.0, 5.0]}}}
    narrow = {"params": {"C": {"choices": [0.1, 1.0]}, "class_weight": {"choices": [None, "balanced"]}}}
    tune(TuneConfig(space=_write(tmp_path / "wide.yaml", wide), n_trials=3, study_name="wide", **FAST))

    with pytest.warns(UserWarning, match=r"warm_start='wide': 1 of its best 3 configurations do not fit.*C=5.0"):
        tune(
            TuneConfig(
                space=_write(tmp_path / "narrow.yaml", narrow),
                strategy="random",
                n_trials=3,
                study_name="narrow",
                warm_start="wide",
                **FAST,
            )
        )

    enqueued = [t for t in _study("narrow").get_trials() if WARM_START_ATTR in t.user_attrs]
    assert sorted(t.params["C"] for t in enqueued) == [0.1, 1.0]


@pytest.mark.slow
def test_warm_start_from_incompatible_space_rejected(tmp_path: Path, client: MlflowClient) -> None:
    first = {"params": {"C": {"type": "float", "low": 0.01, "high": 10.0, "log": True}}}
    other = {"params": {"class_weight": {"choices": [None, "balanced"]}, "fit_intercept": {"choices": [True, False]}}}
    tune(TuneConfig(space=_write(tmp_path / "a.yaml", first), strategy="tpe", n_trials=2, study_name="first", **FAST))

    with pytest.raises(
        ConfigError,
        match=r"warm_start='first' has a search space that does not fit this one \(C: removed \(was float \[0.01, 10, log\]\); "
        r"class_weight: added",
    ):
        tune(
            TuneConfig(
                space=_write(tmp_path / "b.yaml", other),
                strategy="random",
                n_trials=2,
                study_name="second",
                warm_start="first",
                **FAST,
            )
        )

    assert "second" not in optuna.study.get_all_study_names(open_storage(storage_url(mlflow.get_tracking_uri())))
    assert client.search_runs(["0"], filter_string="attributes.status = 'RUNNING'") == []


def test_warm_start_from_unknown_study_rejected(client: MlflowClient) -> None:
    config = TuneConfig(warm_start="missing", study_name="new", **FAST)

    with pytest.raises(ConfigError, match=r"warm_start='missing' is not a study in this storage"):
        tune(config)

    assert client.search_runs(["0"], filter_string="attributes.status = 'RUNNING'") == []


def test_warm_start_of_itself_rejected() -> None:
    with pytest.raises(ConfigError, match=r"warm_start='same' names the study itself"):
        TuneConfig(warm_start="same", study_name="same")


def test_staged_with_workers_rejected(tmp_path: Path) -> None:
    config = TuneConfig(space=_write(tmp_path / "space.yaml", TIERED), staged=True, workers=2, **FAST)

    with pytest.raises(ConfigError, match=r"staged=true runs its two stages in this process.*workers=2"):
        tune(config)
