"""The servable model: category vocabularies, dtype restoration and scoring with original labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import get_scorer

from mlflow_hpo.preprocessing import TablePreprocessor
from mlflow_hpo.serving import TunedModel
from tests._registry_tables import fit_model, mixed_frame, plan_job


def _json_records(frame: pd.DataFrame) -> pd.DataFrame:
    """Rebuild ``frame`` the way a client's JSON request arrives: a list of dicts."""
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    return pd.DataFrame(records)


def test_unseen_level_becomes_missing(tmp_path: Path) -> None:
    job = plan_job(tmp_path)
    model = fit_model(job)
    rows = job.dataset.raw_test.head(3).copy()
    unseen = rows.assign(color=["purple", "red", "teal"])
    missing = rows.assign(color=[None, "red", None])

    transformed = job.dataset.preprocessor.transform(unseen)

    assert transformed["color"].isna().tolist() == [True, False, True]
    assert list(transformed["color"].cat.categories) == ["blue", "green", "red"]
    np.testing.assert_array_equal(model.predict_proba(unseen), model.predict_proba(missing))


def test_vocabulary_is_fixed_on_training_rows() -> None:
    train = pd.DataFrame({"level": ["a", "b", "a"], "x": [1.0, 2.0, 3.0]})
    test = pd.DataFrame({"level": ["b", "c"], "x": [1.0, 2.0]})

    preprocessor = TablePreprocessor().fit(train)

    assert preprocessor.categories_ == {"level": ["a", "b"]}
    assert preprocessor.transform(test)["level"].tolist()[0] == "b"
    assert pd.isna(preprocessor.transform(test)["level"].tolist()[1])


def test_serving_frame_uses_json_dtypes() -> None:
    frame = mixed_frame(40).drop(columns=["y"])
    frame["when"] = pd.date_range("2024-01-01", periods=40, freq="D")

    preprocessor = TablePreprocessor().fit(frame)
    served = preprocessor.serving_frame(frame)

    assert preprocessor.serving_types_ == {
        "x": "double", "color": "string", "count": "Any", "flag": "boolean", "k": "long", "when": "datetime",
    }
    assert served["color"].dtype == object
    assert served["count"].dtype == object
    assert set(map(type, served["count"].dropna())) == {int}
    assert served["count"].isna().any()
    assert served["flag"].dtype == object
    assert set(served["flag"].dropna()) <= {True, False}
    assert served["flag"].isna().any()
    assert served["k"].dtype == "int64"
    assert served["when"].dtype == "datetime64[ns]"


def test_json_records_predict_like_training_frame(tmp_path: Path) -> None:
    frame = mixed_frame()
    frame["when"] = pd.date_range("2024-01-01", periods=len(frame), freq="h")
    job = plan_job(tmp_path, frame)
    model = fit_model(job)
    raw = job.dataset.raw_test
    served = job.dataset.preprocessor.serving_frame(raw)

    from_records = _json_records(served)

    assert from_records["color"].dtype != "category"
    np.testing.assert_array_equal(model.predict_proba(from_records), model.predict_proba(raw))
    np.testing.assert_array_equal(model.predict(from_records), model.predict(raw))


def test_nullable_columns_with_missing_values_predict(tmp_path: Path) -> None:
    job = plan_job(tmp_path)
    model = fit_model(job)
    rows = pd.DataFrame(
        [
            {"x": 0.5, "color": "red", "count": None, "flag": None, "k": 3},
            {"x": -0.5, "color": None, "count": 2, "flag": True, "k": 1},
        ]
    )

    transformed = job.dataset.preprocessor.transform(rows)

    assert transformed["count"].tolist()[1] == 2.0
    assert np.isnan(transformed["count"].tolist()[0])
    assert np.isnan(transformed["flag"].tolist()[0])
    assert transformed["flag"].tolist()[1] == 1.0
    assert set(model.predict(rows)) <= {"yes", "no"}


def test_csv_text_columns_are_categories(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    mixed_frame().to_csv(path, index=False)
    read_back = pd.read_csv(path)
    assert isinstance(read_back["color"].dtype, pd.StringDtype)
    job = plan_job(tmp_path, read_back)
    model = fit_model(job)

    served = job.dataset.preprocessor.serving_frame(job.dataset.raw_test)

    assert job.dataset.preprocessor.serving_types_["color"] == "string"
    assert str(job.dataset.X_train["color"].dtype) == "category"
    np.testing.assert_array_equal(model.predict_proba(_json_records(served)), model.predict_proba(job.dataset.raw_test))


def test_integer_levels_match_json_floats() -> None:
    train = pd.DataFrame({"grade": pd.Categorical([1, 2, 3, 1]), "x": [0.0, 1.0, 2.0, 3.0]})
    preprocessor = TablePreprocessor().fit(train)

    from_json = pd.DataFrame({"grade": [1.0, 3.0, None], "x": [0.0, 1.0, 2.0]})

    assert preprocessor.categories_["grade"] == ["1", "2", "3"]
    assert preprocessor.transform(from_json)["grade"].tolist()[:2] == ["1", "3"]


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "neg_log_loss"])
def test_scorer_accepts_original_labels(tmp_path: Path, metric: str) -> None:
    job = plan_job(tmp_path)
    model = fit_model(job)
    scorer = get_scorer(metric)
    labels = job.dataset.classes[job.dataset.y_test]

    on_labels = scorer(model, job.dataset.raw_test, labels)
    on_codes = scorer(model.estimator, job.dataset.X_test, job.dataset.y_test)

    assert on_labels == pytest.approx(on_codes)


def test_regressor_is_tagged_as_regressor() -> None:
    from sklearn.base import is_classifier, is_regressor
    from sklearn.linear_model import Ridge

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    preprocessor = TablePreprocessor().fit(frame)
    model = TunedModel(preprocessor, Ridge().fit(preprocessor.transform(frame), [0.0, 1.0, 2.0, 3.0]))

    assert is_regressor(model)
    assert not is_classifier(model)
    assert not hasattr(model, "predict_proba")
    assert model.predict(frame).dtype == np.float64
