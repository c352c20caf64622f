"""The registry flow against an `mlflow server` with a PostgreSQL backend store and served artifacts."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_hpo.promotion import CHALLENGER, CHAMPION, PROMOTED, REJECTED, promote
from tests._registry_tables import fit_model, new_parent, plan_job, register
from tests._servers import mlflow_server, pg_database


@pytest.mark.slow
def test_registry_flow_on_postgres_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pg_database("mlflow_hpo") as database:
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL; the test extras install psycopg2.
        backend = database.replace("postgresql://", "postgresql+psycopg2://", 1)
        with mlflow_server(backend, tmp_path / "server") as server:
            _check_registry_flow(server.uri, tmp_path, monkeypatch)


def _check_registry_flow(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    job = plan_job(tmp_path)
    strong_parent = new_parent(job)

    strong = register(job, parent=strong_parent)
    weak = register(job, weak=True)
    again = register(job, parent=strong_parent)
    forced = promote("mixed", version=weak.version, force=True, reason="compare the baseline in service")

    assert strong.decision is not None
    assert strong.decision.outcome == PROMOTED
    assert weak.decision is not None
    assert weak.decision.outcome == REJECTED
    assert again.reused
    assert again.version == strong.version
    assert forced.outcome == "forced"
    versions = client.search_model_versions("name = 'mixed'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]
    assert {v.current_stage for v in versions} == {"None"}
    assert str(client.get_model_version_by_alias("mixed", CHAMPION).version) == weak.version
    assert str(client.get_model_version_by_alias("mixed", CHALLENGER).version) == weak.version
    assert any((tmp_path / "server" / "artifacts").rglob("MLmodel"))

    records = [{"x": 0.1, "color": "blue", "count": 4, "flag": False, "k": 7}]
    served = mlflow.pyfunc.load_model(f"models:/mixed/{strong.version}").predict(pd.DataFrame(records))
    expected = fit_model(job).predict(pd.DataFrame(records))
    np.testing.assert_array_equal(np.asarray(served), expected)
