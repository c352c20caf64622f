"""Shared pieces of the benchmarks: sections, isolated stores, machine facts."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient

# Packages whose versions every results file records.
VERSIONED_PACKAGES = (
    "mlflow",
    "optuna",
    "optuna-integration",
    "lightgbm",
    "xgboost",
    "scikit-learn",
    "pandas",
    "numpy",
    "flaml",
    "mlflow-hpo",
)


@dataclasses.dataclass
class Section:
    """One benchmark's results: a table, its target check and notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    target: str = ""
    target_met: bool | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


_empty_store: list[Path] = []


def _copy_empty_store(target: Path) -> None:
    """Copy a migrated, empty MLflow SQLite store to ``target``.

    Creating a store runs every MLflow migration, 4 to 6 s each on the
    2-core machine of docs/benchmarks.md, so this process creates one
    template and copies it. The template lives in its own temporary folder,
    removed at exit. The Default experiment's artifact location points
    into that folder, so the artifacts of every store copy land there.
    """
    if not _empty_store or not _empty_store[0].exists():
        folder = Path(tempfile.mkdtemp(prefix="mlflow-hpo-bench-store-"))
        atexit.register(shutil.rmtree, folder, True)
        saved_cwd = Path.cwd()
        os.chdir(folder)
        try:
            MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
        finally:
            os.chdir(saved_cwd)
        _empty_store[:] = [folder / "mlflow.db"]
    shutil.copyfile(_empty_store[0], target)


@contextlib.contextmanager
def tracking_store(folder: Path) -> Iterator[str]:
    """Point MLflow at a fresh SQLite store in ``folder`` and work inside it.

    The default Optuna journal of mlflow_hpo lands beside the store, so
    each benchmark variant gets its own study storage too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _copy_empty_store(folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    saved_env = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HPO_STORAGE")}
    saved_cwd = Path.cwd()
    saved_uri = mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.pop("MLFLOW_HPO_STORAGE", None)
    mlflow.set_tracking_uri(uri)
    # The fluent API caches the active experiment id across stores; reset it
    # to the new store's Default experiment.
    mlflow.set_experiment(experiment_id="0")
    os.chdir(folder)
    try:
        yield uri
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        mlflow.set_tracking_uri(saved_uri)


def quiet_logs() -> None:
    """Silence per-trial INFO lines so that console output stays readable."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow_hpo", "mlflow", "alembic", "flaml", "flaml.automl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def machine_facts() -> dict[str, Any]:
    """Return the CPU model, core count, memory, OS and package versions."""
    cpu_model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    versions = {"python": sys.version.split()[0]}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    import mlflow_hpo

    return {
        "mlflow_hpo_source": str(Path(mlflow_hpo.__file__).resolve().parent.parent),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Return this process's current resident set size in MiB, read from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fmt(value: Any, digits: int = 3) -> str:
    """Format a table cell: floats to ``digits`` significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def single_thread_space(folder: Path) -> str:
    """Write a space file: the built-in space with every fit on one thread; return its path.

    By default mlflow_hpo gives each fit all cores (``os.cpu_count()`` over
    the parallel trials). On a 2-core machine that other jobs share, two
    OpenMP threads on a few hundred rows run many times slower than one
    (see docs/benchmarks.md), so every tool here trains single-threaded.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "single_thread_space.yaml"
    path.write_text("extends: builtin\nfixed:\n  n_jobs: 1\n", encoding="utf-8")
    return str(path)


def penguins_csv(folder: Path) -> str:
    """Write palmerpenguins' table (rows with a body mass, no year) as a CSV in ``folder``."""
    import palmerpenguins

    frame = palmerpenguins.load_penguins().dropna(subset=["body_mass_g"])
    path = folder / "penguins.csv"
    frame.drop(columns=["year"]).to_csv(path, index=False)
    return str(path)
