"""study.json: a portable export that rebuilds an identical study in a fresh storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from mlflow_hpo.report import export_study, import_study, write_study_json


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="source", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=5))
    study.set_user_attr("metric", "roc_auc")

    def objective(trial: optuna.Trial) -> float:
        booster = trial.suggest_categorical("booster", ["gbtree", "dart", None])
        trial.suggest_int("depth", 1, 8, step=1)
        learning_rate = trial.suggest_float("learning_rate", 1e-4, 1.0, log=True)
        if booster == "dart":
            trial.suggest_float("rate_drop", 0.0, 0.5, step=0.05)
        trial.set_user_attr("cv_scores", [0.9, 0.8])
        trial.report(float("nan"), 0)
        trial.report(learning_rate, 1)
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 4:
            raise ValueError("diverged")
        return learning_rate

    study.optimize(objective, n_trials=8, catch=(ValueError,))
    return study


def _comparable(trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    return {
        "number": trial.number,
        "state": trial.state,
        "values": trial.values,
        "params": trial.params,
        "distributions": trial.distributions,
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
        "intermediate_values": repr(trial.intermediate_values),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
    }


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_export_rebuilds_identical_study(tmp_path: Path, backend: str) -> None:
    source = _study()
    path = tmp_path / "study.json"
    write_study_json(source, path)
    storage = (
        JournalStorage(JournalFileBackend(str(tmp_path / "fresh.journal")))
        if backend == "journal"
        else f"sqlite:///{tmp_path / 'fresh.db'}"
    )

    rebuilt = import_study(path, storage)

    assert rebuilt.study_name == "source"
    assert rebuilt.directions == source.directions
    assert rebuilt.user_attrs == source.user_attrs
    assert [_comparable(t) for t in rebuilt.get_trials()] == [_comparable(t) for t in source.get_trials()]
    assert rebuilt.best_trial.number == source.best_trial.number
    assert export_study(rebuilt)["trials"] == export_study(source)["trials"]


def test_export_is_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    write_study_json(_study(), path)

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(path.read_text(), parse_constant=reject)

    assert data["format"] == "mlflow_hpo.study/1"
    assert data["trials"][0]["intermediate_values"]["0"] == "nan"
    assert {t["state"] for t in data["trials"]} == {"COMPLETE", "PRUNED", "FAIL"}


def test_import_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a study export of format 'mlflow_hpo.study/1'"):
        import_study({"format": "other"}, f"sqlite:///{tmp_path / 'x.db'}")


def test_multi_objective_export_round_trip(tmp_path: Path) -> None:
    source = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=2))
    source.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)

    rebuilt = import_study(export_study(source), f"sqlite:///{tmp_path / 'mo.db'}", study_name="copy")

    assert rebuilt.study_name == "copy"
    assert [t.values for t in rebuilt.get_trials()] == [t.values for t in source.get_trials()]
    assert {t.number for t in rebuilt.best_trials} == {t.number for t in source.best_trials}
