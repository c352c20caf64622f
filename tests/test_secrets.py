"""Passwords in storage and tracking URLs never reach params, tags, artifacts, logs or errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import cli
from mlflow_hpo.storage import RedactingFilter, redact_url
from tests._servers import fast_cli_args, pg_database, study_runs

PASSWORD = "S3cretPw"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://hpo:S3cretPw@db.internal:5432/optuna", "postgresql://hpo:***@db.internal:5432/optuna"),
        ("mysql+pymysql://root:S3cretPw@127.0.0.1/optuna", "mysql+pymysql://root:***@127.0.0.1/optuna"),
        ("http://admin:S3cretPw@127.0.0.1:5000", "http://admin:***@127.0.0.1:5000"),
        ("a postgresql://u:S3cretPw@h/d and http://v:S3cretPw@h2/", "a postgresql://u:***@h/d and http://v:***@h2/"),
        ("sqlite:///tmp/optuna.db", "sqlite:///tmp/optuna.db"),
        ("postgresql://hpo@db.internal/optuna", "postgresql://hpo@db.internal/optuna"),
    ],
)
def test_redact_url_cases(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def test_log_filter_redacts_messages() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "cannot reach %s", ("postgresql://u:S3cretPw@h/d",), None)

    RedactingFilter().filter(record)

    assert PASSWORD not in record.getMessage()
    assert "postgresql://u:***@h/d" in record.getMessage()


def test_storage_error_hides_password(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HPO_STORAGE", f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/hpo_no_such_database")

    status = cli.main(["tune", *fast_cli_args(n_trials=1)])

    err = capsys.readouterr().err
    assert status == 2
    assert PASSWORD not in err
    assert "postgres:***@127.0.0.1" in err
    errors = [line for line in err.splitlines() if line.startswith("mlflow-hpo: error:")]
    assert errors == [err.strip().splitlines()[-1]]
    assert "does not exist" in errors[0]


def _texts_of_artifacts(client: MlflowClient, run_id: str, folder: Path) -> str:
    local = client.download_artifacts(run_id, "", str(folder))
    texts = []
    for path in Path(local).rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(texts)


@pytest.mark.slow
def test_password_absent_from_study_records(
    client: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    with pg_database("hpo_secrets") as url:
        with_password = url.replace("postgres@", f"postgres:{PASSWORD}@")
        monkeypatch.setenv("MLFLOW_HPO_STORAGE", with_password)
        with caplog.at_level(logging.DEBUG):
            status = cli.main(["tune", *fast_cli_args(n_trials=3, study_name="secret")])
        output = capsys.readouterr()
        runs = study_runs(client, "secret")

    assert status == 0, output.err
    assert runs
    records = [output.out, output.err, caplog.text]
    for run in runs:
        records.append(repr(run.data.params))
        records.append(repr(run.data.tags))
        records.append(_texts_of_artifacts(client, run.info.run_id, tmp_path / run.info.run_id))
    leaked = [i for i, text in enumerate(records) if PASSWORD in text]
    assert leaked == []
    parent = next(r for r in runs if r.data.tags.get("mlflow_hpo.role") == "study")
    assert parent.data.tags["mlflow_hpo.storage"].startswith("postgresql://postgres:***@127.0.0.1")
