"""Where the Optuna study lives, and URL redaction.

By default the study is kept in an Optuna journal file next to the MLflow
store (``mlflow_hpo.journal`` beside ``mlflow.db`` or ``mlruns/``). The
journal backend appends under a file lock, so several local processes can
share it. ``MLFLOW_HPO_STORAGE`` selects another storage: a database URL
(``postgresql://...``, ``sqlite:///...``) or a journal file path. It is read
from the environment, never from a run parameter, because ``mlflow run``
logs every ``-P`` value in clear text.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from mlflow_hpo._errors import ConfigError

STORAGE_ENV = "MLFLOW_HPO_STORAGE"
JOURNAL_FILE_NAME = "mlflow_hpo.journal"
# Seconds between heartbeats of running trials on database storage; a trial
# without a heartbeat for HEARTBEAT_GRACE seconds is failed as stale.
HEARTBEAT_INTERVAL = 30
HEARTBEAT_GRACE = 120

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def redact_url(text: str) -> str:
    """Replace the password of every URL in ``text`` with ``***``."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def default_storage_url(tracking_uri: str) -> str:
    """Return the journal file path beside the MLflow store of ``tracking_uri``."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite":
        db_path = tracking_uri[len("sqlite:///") :] if tracking_uri.startswith("sqlite:///") else parts.path
        folder = Path(db_path).parent if db_path and db_path != ":memory:" else Path.cwd()
    elif parts.scheme in ("", "file"):
        folder = Path(parts.path or tracking_uri).parent
    else:
        folder = Path.cwd()
    return str((folder / JOURNAL_FILE_NAME).resolve())


def storage_url(tracking_uri: str) -> str:
    """Return the configured storage URL or path (may hold a password)."""
    return os.environ.get(STORAGE_ENV, "").strip() or default_storage_url(tracking_uri)


def open_storage(url: str) -> BaseStorage:
    """Open ``url`` as an Optuna storage: a database URL or a journal file path."""
    scheme = urlsplit(url).scheme
    if "://" in url and scheme not in ("file",):
        if not scheme.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
            raise ConfigError(
                f"unsupported storage URL {redact_url(url)!r} in {STORAGE_ENV}; "
                "use postgresql://user@host/db, sqlite:///path.db or a journal file path."
            )
        try:
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=HEARTBEAT_GRACE,
                engine_kwargs={"pool_pre_ping": True} if not scheme.startswith("sqlite") else None,
            )
        except Exception as exc:  # SQLAlchemy and driver errors have no common base
            reason = redact_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
            raise ConfigError(
                f"cannot open storage {redact_url(url)!r} from {STORAGE_ENV} ({reason}); "
                "check the URL, the server and the driver package."
            ) from None
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    if path.exists() and path.is_dir():
        raise ConfigError(f"storage path {str(path)!r} is a folder; set {STORAGE_ENV} to a file path.")
    if not path.parent.exists():
        raise ConfigError(
            f"folder of storage path {str(path)!r} does not exist; create it or change {STORAGE_ENV}."
        )
    return JournalStorage(JournalFileBackend(str(path)))


def study_exists(storage: BaseStorage, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage)
