"""Real services for the fault and multi-process tests: PostgreSQL databases and `mlflow server`."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest

PG_HOST = "127.0.0.1"
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_connection():  # type: ignore[no-untyped-def]
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        connection = psycopg2.connect(host=PG_HOST, port=5432, user="postgres", dbname="test", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"local PostgreSQL server unavailable: {exc}")
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """Create a fresh PostgreSQL database, yield its URL, then drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = _admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}:5432/{name}"
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.close()


class MlflowServer:
    """An `mlflow server` process on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log_path: Path) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts = artifacts
        self.log_path = log_path
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start in {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, folder: Path) -> Iterator[MlflowServer]:
    folder.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(backend_store_uri, folder / "artifacts", folder / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def load_study(storage: str, study_name: str) -> optuna.Study:
    from mlflow_hpo.storage import open_storage

    return optuna.load_study(study_name=study_name, storage=open_storage(storage))


def study_runs(client: mlflow.MlflowClient, study_name: str) -> list[mlflow.entities.Run]:
    """Return every run tagged with ``study_name``, across experiments."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`mlflow_hpo.study_name` = '{study_name}'", max_results=5000)


# A study whose trials take well under a second: logistic regression on iris, 2 folds.
FAST_OPTIONS = {
    "data": "sklearn:iris",
    "model": "logistic_regression",
    "n_folds": "2",
    "strategy": "random",
    "pruner": "none",
    "importance": "none",
    "register_model": "",
}


def fast_cli_args(**options: object) -> list[str]:
    """Return ``tune`` command-line arguments for a fast study, with ``options`` on top."""
    merged = {**FAST_OPTIONS, **{k: str(v) for k, v in options.items()}}
    return [item for key, value in merged.items() for item in (f"--{key}", value)]
