"""Arguments and output of ``mlflow-hpo promote`` (the MLproject ``promote`` entry point)."""

from __future__ import annotations

import argparse
import os

from mlflow_hpo.config import _parse_float, parse_bool
from mlflow_hpo.promotion import TAG_DECISION, promote

_RUN_TAG_NAME = "mlflow_hpo.promotion.model_name"
_RUN_TAG_VERSION = "mlflow_hpo.promotion.version"


def add_promote_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``promote`` to ``parser``."""
    parser.add_argument("--model_name", required=True, help="registered model name")
    parser.add_argument("--version", default="", help="version to promote (default: the one that the challenger alias points to)")
    parser.add_argument(
        "--data", default="", help="held-out rows that both versions are scored on: sklearn:<name> or a CSV/Parquet path"
    )
    parser.add_argument("--target", default="", help="target column (default: the column the version was tuned on)")
    parser.add_argument("--metric", default="", help="scikit-learn scorer name (default: the version's tuning metric)")
    parser.add_argument("--force", default="false", help="true moves champion without the gate; needs --reason")
    parser.add_argument("--reason", default="", help="why the gate is skipped, recorded on the version")
    parser.add_argument(
        "--promote_margin", default="0", help="how much worse than the champion the version may score, in metric units"
    )


def run_promote(args: argparse.Namespace) -> str:
    """Run ``promote`` for parsed arguments and return the line to print."""
    decision = promote(
        args.model_name,
        version=args.version.strip(),
        data=args.data.strip(),
        target=args.target.strip(),
        metric=args.metric.strip(),
        force=parse_bool("force", args.force),
        reason=args.reason,
        margin=_parse_float("promote_margin", args.promote_margin),
    )
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        tags = {_RUN_TAG_NAME: decision.name, _RUN_TAG_VERSION: decision.version, TAG_DECISION: decision.outcome}
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    return f"{decision.name} version {decision.version}: {decision.describe()}"
