"""Where the Optuna study lives, and URL redaction.

By default the study is kept in an Optuna journal file next to the MLflow
store (``mlflow_hpo.journal`` beside ``mlflow.db`` or ``mlruns/``). The
journal backend appends under a file lock, so several local processes can
share it, and flushes the file to disk when a trial ends (see
``TrialSyncedJournal``). ``MLFLOW_HPO_STORAGE`` selects another storage: a database URL
(``postgresql://...``, ``sqlite:///...``) or a journal file path. It is read
from the environment, never from a run parameter, because ``mlflow run``
logs every ``-P`` value in clear text.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._storage import JournalOperation

from mlflow_hpo._errors import ConfigError

STORAGE_ENV = "MLFLOW_HPO_STORAGE"
JOURNAL_FILE_NAME = "mlflow_hpo.journal"
# Seconds between heartbeats of running trials on database storage; a trial
# without a heartbeat for HEARTBEAT_GRACE seconds is failed as stale.
HEARTBEAT_INTERVAL = 30
HEARTBEAT_GRACE = 120
# Seconds a SQLite connection waits for another process's write lock before
# raising "database is locked"; Optuna's writes are short, so several
# processes sharing one file queue up instead of failing.
SQLITE_BUSY_TIMEOUT = 60

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")


def redact_url(text: str) -> str:
    """Replace the password of every URL in ``text`` with ``***``."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class RedactingFilter(logging.Filter):
    """Logging filter that removes URL passwords from every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if redact_url(str(exc)) != str(exc):
                record.exc_info, record.exc_text = None, None
                record.msg = f"{record.msg} ({type(exc).__name__}: {redact_url(str(exc))})"
        return True


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


def open_storage(url: str, *, failed_trial_callback: Any = None) -> BaseStorage:
    """Open ``url`` as an Optuna storage: a database URL or a journal file path.

    ``failed_trial_callback(study, trial)`` runs for each trial that a
    database storage fails because its heartbeat stopped.
    """
    scheme = urlsplit(url).scheme
    if "://" in url and scheme not in ("file",):
        if not scheme.startswith(("sqlite", "postgresql", "mysql", "oracle", "mssql")):
            raise ConfigError(
                f"unsupported storage URL {redact_url(url)!r} in {STORAGE_ENV}; "
                "use postgresql://user@host/db, sqlite:///path.db or a journal file path."
            )
        is_sqlite = scheme.startswith("sqlite")
        engine_kwargs: dict[str, Any] = (
            {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}} if is_sqlite else {"pool_pre_ping": True}
        )
        # Several processes creating the schema of a new SQLite file at once
        # collide on CREATE TABLE, so the first one creates it under a file lock.
        init_lock = _file_lock(Path(_sqlite_path(url) + ".init.lock")) if is_sqlite else contextlib.nullcontext()
        try:
            with init_lock:
                return RDBStorage(
                    database_url_with_driver(url),
                    heartbeat_interval=HEARTBEAT_INTERVAL,
                    grace_period=HEARTBEAT_GRACE,
                    heartbeat_stale_trial_callback=failed_trial_callback,
                    engine_kwargs=engine_kwargs,
                )
        except Exception as exc:  # SQLAlchemy and driver errors have no common base
            # Optuna reports some connection errors as ImportError; the cause holds the driver's message.
            root: BaseException = exc
            while root.__cause__ is not None or root.__context__ is not None:
                root = root.__cause__ or root.__context__  # type: ignore[assignment]
            reason = redact_url(str(root).strip().splitlines()[0]) if str(root).strip() else type(root).__name__
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
    return JournalStorage(TrialSyncedJournal(str(path)))


# Journal operations after which the file is flushed to disk: a trial's
# end and every change to a study. What a trial wrote before its end
# (params, reports, attributes) is flushed with it.
_SYNCED_OPERATIONS = frozenset(
    {
        JournalOperation.CREATE_STUDY,
        JournalOperation.DELETE_STUDY,
        JournalOperation.SET_STUDY_USER_ATTR,
        JournalOperation.SET_STUDY_SYSTEM_ATTR,
        JournalOperation.SET_TRIAL_STATE_VALUES,
        JournalOperation.DISCARD_TRIALS,
    }
)


class _QueuedSymlinkLock:
    """Optuna's symlink lock, entered one process at a time through ``flock``.

    Optuna's lock polls with a growing sleep (up to a second) while another
    process holds it, so a waiting worker could sleep far longer than the
    other worker's write takes. Here the processes of this machine queue on
    ``flock``, which wakes the next one as soon as the lock is free, and
    then take the symlink lock that plain Optuna writers of the same file
    also take.
    """

    def __init__(self, path: str) -> None:
        self._symlink = JournalFileSymlinkLock(path)
        self._queue_path = f"{path}.queue.lock"
        self._handle: Any = None

    def acquire(self) -> None:
        handle = open(self._queue_path, "a+b")  # noqa: SIM115 - closed in release
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._symlink.acquire()
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def release(self) -> None:
        handle, self._handle = self._handle, None
        try:
            self._symlink.release()
        finally:
            if handle is not None:
                handle.close()


class TrialSyncedJournal(JournalFileBackend):
    """Optuna's journal file, flushed to disk when a trial ends instead of after every write.

    Optuna's backend calls ``fsync`` after each of the dozen or more writes
    of a trial (its params, pruning reports and attributes). Every write
    still reaches the operating system at once, so other processes and a
    resume after a killed process see it. A machine crash can lose the
    writes of the trials that were running, but never a finished trial. The
    file format is Optuna's, so ``JournalFileBackend`` reads it.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._path = path
        self._write_lock = _QueuedSymlinkLock(path)
        self._thread_lock = threading.Lock()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        sync = any(log.get("op_code") in _SYNCED_OPERATIONS for log in logs)
        with self._thread_lock:
            self._write_lock.acquire()
            try:
                with open(self._path, "ab") as handle:
                    handle.write(text.encode("utf-8"))
                    handle.flush()
                    if sync:
                        os.fsync(handle.fileno())
            finally:
                self._write_lock.release()


def study_exists(storage: BaseStorage, name: str) -> bool:
    return name in optuna.study.get_all_study_names(storage)


def database_url_with_driver(url: str) -> str:
    """Name the installed PostgreSQL driver in a plain ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3, while this project
    depends on psycopg2; the URL keeps working with whichever is installed.
    """
    if not url.startswith("postgresql://") or importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is None:
        return url
    return "postgresql+psycopg2://" + url[len("postgresql://") :]


def _sqlite_path(url: str) -> str:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path.split("?", 1)[0] if path and path != ":memory:" else str(Path.cwd() / "optuna-sqlite")


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_ENGINES: dict[str, Any] = {}


@contextlib.contextmanager
def study_lock(url: str, study_name: str, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on ``study_name`` for ``purpose`` across threads and processes.

    Journal files and SQLite databases are locked with ``flock`` on a file
    beside them, so the lock holds for the processes of one machine.
    PostgreSQL uses a session advisory lock, which holds across machines.
    The operating system or the database releases both when the holder dies.
    """
    key = f"{url}|{study_name}|{purpose}"
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        scheme = urlsplit(url).scheme if "://" in url else ""
        if scheme.startswith("postgresql"):
            with _advisory_lock(url, f"{study_name}|{purpose}"):
                yield
        elif scheme.startswith("sqlite"):
            with _file_lock(Path(f"{_sqlite_path(url)}.{purpose}.lock")):
                yield
        elif scheme in ("", "file"):
            path = url[len("file://") :] if url.startswith("file://") else url
            with _file_lock(Path(f"{path}.{purpose}.lock")):
                yield
        else:
            # NOTE: MySQL and other databases get no cross-process lock, so
            # only one process per study is safe on them.
            yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(url: str, name: str) -> Iterator[None]:
    import sqlalchemy

    engine = _ENGINES.get(url)
    if engine is None:
        engine = sqlalchemy.create_engine(database_url_with_driver(url), poolclass=sqlalchemy.pool.NullPool)
        _ENGINES[url] = engine
    # pg_advisory_lock takes a signed 64-bit key.
    key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
