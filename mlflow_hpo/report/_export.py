"""Portable study export (study.json) and its import into any Optuna storage.

The file contains the study's directions and user attributes, and for each
trial its number, state, values, parameters with their distributions,
intermediate values, user and system attributes and timestamps. Non-finite
floats among values are written as the strings "nan", "inf" and "-inf", so
the file stays valid JSON for any reader.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

FORMAT = "mlflow_hpo.study/1"


def export_study(study: optuna.Study) -> dict[str, Any]:
    """Return the study as a JSON-ready mapping."""
    return {
        "format": FORMAT,
        "study_name": study.study_name,
        "directions": [d.name for d in study.directions],
        "user_attrs": study.user_attrs,
        "trials": [_trial_to_json(t) for t in study.get_trials(deepcopy=False)],
    }


def write_study_json(study: optuna.Study, path: Path) -> None:
    """Write the export of ``study`` to ``path``."""
    path.write_text(json.dumps(export_study(study), indent=1, default=str) + "\n", encoding="utf-8")


def import_study(
    data: dict[str, Any] | Path, storage: str | BaseStorage, *, study_name: str | None = None
) -> optuna.Study:
    """Create a new study in ``storage`` with every trial of an export.

    Raises:
        ValueError: if ``data`` is not an export of this format.
        optuna.exceptions.DuplicatedStudyError: if the study name exists in ``storage``.
    """
    if isinstance(data, Path):
        data = json.loads(data.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    if data.get("format") != FORMAT:
        raise ValueError(f"not a study export of format {FORMAT!r}: format={data.get('format')!r}")
    study = optuna.create_study(
        storage=storage,
        study_name=study_name or data["study_name"],
        directions=[d.lower() for d in data["directions"]],
    )
    for key, value in data["user_attrs"].items():
        study.set_user_attr(key, value)
    for trial in data["trials"]:
        study.add_trial(_trial_from_json(trial))
    return study


def _trial_to_json(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": None if trial.values is None else [_float_out(v) for v in trial.values],
        "params": trial.params,
        "distributions": {name: json.loads(distribution_to_json(d)) for name, d in trial.distributions.items()},
        "intermediate_values": {str(step): _float_out(v) for step, v in trial.intermediate_values.items()},
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
        "datetime_start": _time_out(trial.datetime_start),
        "datetime_complete": _time_out(trial.datetime_complete),
    }


def _trial_from_json(item: dict[str, Any]) -> FrozenTrial:
    distributions = {name: json_to_distribution(json.dumps(d)) for name, d in item["distributions"].items()}
    values = item["values"]
    return FrozenTrial(
        number=item["number"],
        state=TrialState[item["state"]],
        value=None,
        values=None if values is None else [_float_in(v) for v in values],
        datetime_start=_time_in(item["datetime_start"]),
        datetime_complete=_time_in(item["datetime_complete"]),
        params=item["params"],
        distributions=distributions,
        user_attrs=item["user_attrs"],
        system_attrs=item["system_attrs"],
        intermediate_values={int(step): _float_in(v) for step, v in item["intermediate_values"].items()},
        trial_id=item["number"],
    )


def _float_out(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _float_in(value: float | str) -> float:
    return float(value)


def _time_out(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time_in(text: str | None) -> datetime.datetime | None:
    return None if text is None else datetime.datetime.fromisoformat(text)
