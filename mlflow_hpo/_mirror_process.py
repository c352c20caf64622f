"""The MLflow writer process of a study's mirror (see ``mlflow_hpo.tracking``).

It reads its settings, then one ``TrialRecord`` after another, as pickles
on standard input, writes each as a child run and replies with a pickled
dict on the standard output it was started with. Its own ``print`` output
and that of the libraries it calls go to standard error. It ends when its
input closes.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import Any


class _Collector(logging.Handler):
    """Keeps the warnings of one write, to be logged again by the tuning process."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


def main() -> None:
    """Serve writes until standard input closes."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer

    from mlflow.tracking import MlflowClient

    from mlflow_hpo.storage import redact_url
    from mlflow_hpo.tracking import ChildRunWriter, _is_transient

    settings: dict[str, Any] = pickle.load(requests)
    writer = ChildRunWriter(
        MlflowClient(tracking_uri=settings["tracking_uri"]),
        experiment_id=settings["experiment_id"],
        parent_run_id=settings["parent_run_id"],
        study_name=settings["study_name"],
        lock=settings["lock"],
    )
    collector = _Collector()
    package_logger = logging.getLogger("mlflow_hpo")
    package_logger.addHandler(collector)
    package_logger.propagate = False
    while True:
        try:
            record = pickle.load(requests)
        except EOFError:
            return
        collector.records = []
        reply: dict[str, Any] = {"error": None, "transient": False}
        try:
            writer.write(record)
        except Exception as exc:  # noqa: BLE001 - the tuning process decides whether to retry
            reply.update(error=redact_url(str(exc)) or type(exc).__name__, transient=_is_transient(exc))
        reply.update(key_mapping=dict(writer.key_mapping), logs=collector.records)
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    main()
