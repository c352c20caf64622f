"""Logging the winner as an MLflow model, registering it and running the champion gate.

`log_and_register` logs the refit winner on the parent run. Its signature is
inferred on the serving frame of the training rows, and the training rows are
logged as an MLflow dataset input. The logged model is loaded back through
pyfunc as a smoke test and then registered with lineage tags. The new version
gets the ``challenger`` alias and faces the champion gate in
`mlflow_hpo.promotion`. Registry stages are never used, only aliases.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

from mlflow_hpo import __version__
from mlflow_hpo._errors import HpoError
from mlflow_hpo.data import frame_digest
from mlflow_hpo.preprocessing import ANY, TablePreprocessor
from mlflow_hpo.promotion import (
    CHALLENGER,
    NOT_COMPARED,
    Decision,
    HeldOut,
    apply_decision,
    champion_version,
    run_gate,
)
from mlflow_hpo.runs import ParentRun
from mlflow_hpo.serving import TunedModel

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)
INPUT_EXAMPLE_ROWS = 5
# Rows of the training data that the signature is inferred on.
SIGNATURE_ROWS = 10_000
MODEL_ARTIFACT = "model"
_PACKAGE_DIR = str(Path(__file__).resolve().parent)

TAG_STUDY = "mlflow_hpo.study_name"
TAG_PARENT = "mlflow_hpo.parent_run_id"
TAG_TRIAL = "mlflow_hpo.trial_number"
TAG_DIGEST = "mlflow_hpo.dataset_digest"
TAG_TRAINING_DATASET = "mlflow_hpo.training_dataset_digest"
TAG_VERSION = "mlflow_hpo.version"
TAG_COMMIT = "mlflow_hpo.source_commit"
TAG_METRIC = "mlflow_hpo.metric"
TAG_TASK = "mlflow_hpo.task"
TAG_DATA = "mlflow_hpo.data"
TAG_TARGET = "mlflow_hpo.target"
_GIT_COMMIT_TAG = "mlflow.source.git.commit"


class RegistrationError(HpoError):
    """The model failed a check that gates registration."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """Outcome of `log_and_register`.

    Attributes:
        model_uri: URI of the logged model.
        name: Registered model name, "" when registration is off.
        version: Registered version, None when registration is off.
        reused: True when an earlier run of the same study had already
            registered this winner, so no model was logged again.
        decision: Outcome of the champion gate, None when registration is off.
        is_challenger: True when ``challenger`` points to this version, which
            is the case unless a newer version exists.
    """

    model_uri: str
    name: str = ""
    version: str | None = None
    reused: bool = False
    decision: Decision | None = None
    is_challenger: bool = False

    def summary_lines(self) -> list[str]:
        """Return the ``## Registry`` section of ``summary.md``."""
        lines = ["## Registry", ""]
        if not self.name:
            return [*lines, f"- Model logged as `{self.model_uri}`; registration is off.", ""]
        again = " (registered by an earlier run of this study)" if self.reused else ""
        alias = f", alias `{CHALLENGER}`" if self.is_challenger else ""
        lines.append(f"- Registered model `{self.name}` version {self.version}{again}{alias}.")
        if self.decision is not None:
            lines.append(f"- Champion gate: {self.decision.describe()}")
        return [*lines, ""]


def registered_name(job: Job) -> str:
    """Return the registered model name: the configured one, or ``<dataset>-<model>``."""
    name = job.config.register_model
    if name == "auto":
        name = re.sub(r"[^\w\-.]", "_", f"{job.dataset.name}-{job.config.model}")
    return name


def input_example(job: Job) -> pd.DataFrame:
    """Return training rows as a JSON request would carry them, with a value in every column.

    The first rows are taken, plus, for each column that is missing in all
    of them, the first training row where that column has a value.
    """
    raw = job.dataset.raw_train
    rows = list(range(min(INPUT_EXAMPLE_ROWS, len(raw))))
    for column in raw.columns:
        present = np.flatnonzero(raw[column].notna().to_numpy())
        if len(present) and not raw[column].iloc[rows].notna().any():
            rows.append(int(present[0]))
    return job.dataset.preprocessor.serving_frame(raw.iloc[rows].reset_index(drop=True))


def build_signature(model: TunedModel, job: Job, example: pd.DataFrame) -> ModelSignature:
    """Infer the signature on the serving frame of the training rows and check it.

    Raises:
        RegistrationError: MLflow could not infer a type for a column, or the
            inferred types differ from the ones the model's preprocessor serves.
    """
    preprocessor = job.dataset.preprocessor
    served = preprocessor.serving_frame(job.dataset.raw_train.head(SIGNATURE_ROWS))
    try:
        with warnings.catch_warnings():
            # Long columns come only from integer columns without missing values, so MLflow's
            # hint about integers that cannot hold missing values does not apply.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            signature = infer_signature(served, _signature_output(model.predict(example)))
    except Exception as exc:  # MLflow raises several types for frames it cannot describe
        raise RegistrationError(
            f"could not infer a model signature from the training rows ({exc}); the model is not registered."
        ) from exc
    signature = _with_any_columns(signature, preprocessor)
    check_signature(signature, preprocessor)
    return signature


def _with_any_columns(signature: ModelSignature, preprocessor: TablePreprocessor) -> ModelSignature:
    """Give nullable integer columns MLflow's Any type, optional, in place of the inferred one."""
    if signature.inputs is None:
        return signature
    columns = []
    for spec in signature.inputs.inputs:
        if preprocessor.serving_types_.get(str(spec.name)) == ANY:
            spec = ColSpec(AnyType(), name=spec.name, required=False)
        columns.append(spec)
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs, params=signature.params)


def check_signature(signature: ModelSignature, preprocessor: TablePreprocessor) -> None:
    """Raise RegistrationError unless ``signature`` types every feature column as the model serves it."""
    if signature.inputs is None:
        raise RegistrationError("the model signature has no inputs; the model is not registered.")
    inferred = {spec.name: _type_name(spec.type) for spec in signature.inputs.inputs}
    for column in preprocessor.columns_:
        expected = preprocessor.serving_types_[column]
        found = inferred.get(column)
        if found is None:
            raise RegistrationError(
                f"feature column {column!r} is missing from the model signature; the model is not registered."
            )
        if found == "Any" and expected != ANY:
            raise RegistrationError(
                f"feature column {column!r} has no value in any training row, so the model signature "
                "cannot give it a type; drop the column or fill it, then tune again."
            )
        if found != expected:
            raise RegistrationError(
                f"feature column {column!r} has signature type {found}, expected {expected}; "
                "the model is not registered."
            )


def log_and_register(model: TunedModel, job: Job, parent: ParentRun, trial_number: int) -> Registration:
    """Log ``model`` on the parent run, smoke-test it, register it and run the champion gate.

    A winner that an earlier run of the same study already registered (same
    parent run, trial and data) is reused instead of logged again, so
    re-running a finished study adds no version.

    Raises:
        RegistrationError: the signature is invalid or the smoke test failed;
            nothing is registered then.
    """
    client = MlflowClient()
    training_digest = _log_training_dataset(job, parent)
    name = registered_name(job)
    existing = _registered_version(client, name, job, parent, trial_number) if name else None
    if existing is not None:
        _logger.info("Winner of study %s is already %s version %s; not registering it again.",
                     job.study_name, name, existing.version)
        model_uri, version, reused = str(existing.source), str(existing.version), True
    else:
        model_uri = _log_checked_model(model, job, parent)
        if not name:
            return Registration(model_uri)
        tags = lineage_tags(client, job, parent, trial_number, training_digest)
        registered = mlflow.register_model(model_uri, name, tags=tags)
        version, reused = str(registered.version), False
        _logger.info("Registered %s version %s from %s.", name, version, model_uri)

    is_challenger = _mark_challenger(client, name, version)
    held_out = HeldOut(
        X=job.dataset.raw_test,
        y=decoded_labels(job.dataset.y_test, job.dataset.classes),
        objective=job.objective,
        digest=frame_digest(job.dataset.raw_test),
    )
    champion = champion_version(client, name)
    overlap = _champion_trained_on_held_out(client, name, champion, version, job.dataset.digest, training_digest)
    if overlap:
        decision = apply_decision(client, Decision(
            name=name,
            version=version,
            outcome=NOT_COMPARED,
            reason=overlap,
            metric=job.objective.name,
            margin=job.config.promote_margin,
            previous_champion=champion,
            held_out_digest=held_out.digest,
            held_out_rows=len(held_out.X),
        ))
    else:
        decision = run_gate(client, name, version, held_out, margin=job.config.promote_margin)
    return Registration(model_uri, name, version, reused, decision, is_challenger)


def _champion_trained_on_held_out(
    client: MlflowClient, name: str, champion: str | None, version: str, dataset_digest: str, training_digest: str
) -> str:
    """Return why this run's held-out rows cannot judge the champion, or "" when they can.

    When the champion came from the same table but other training rows (a
    different seed or ``test_size``), some of this run's held-out rows were
    its training rows, and the gate would favour it.
    """
    # NOTE: a champion trained on another table is still compared, because
    # digests cannot show whether an older snapshot's rows overlap this one.
    if champion is None or champion == version:
        return ""
    tags = client.get_model_version(name, champion).tags
    same_table = tags.get(TAG_DIGEST) == dataset_digest
    if not same_table or tags.get(TAG_TRAINING_DATASET, training_digest) == training_digest:
        return ""
    return (
        f"version {champion} was trained on another split of the same table, so this run's held-out rows "
        f"include rows it was trained on; compare the two on rows neither was trained on with "
        f"mlflow-hpo promote --model_name {name} --data <rows>"
    )


def decoded_labels(y: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Return the original labels of encoded targets (regression targets unchanged)."""
    return y if classes is None else classes[np.asarray(y, dtype=int)]


def lineage_tags(
    client: MlflowClient, job: Job, parent: ParentRun, trial_number: int, training_digest: str
) -> dict[str, str]:
    """Return the version tags that trace a model back to its study, data and code."""
    tags = {
        TAG_STUDY: job.study_name,
        TAG_PARENT: parent.run_id,
        TAG_TRIAL: str(trial_number),
        TAG_DIGEST: job.dataset.digest,
        TAG_TRAINING_DATASET: training_digest,
        TAG_VERSION: __version__,
        TAG_METRIC: job.objective.name,
        TAG_TASK: job.dataset.task,
        TAG_DATA: job.config.data,
        TAG_TARGET: job.config.target,
    }
    commit = source_commit(client, parent.run_id)
    if commit:
        tags[TAG_COMMIT] = commit
    return tags


def source_commit(client: MlflowClient, run_id: str) -> str:
    """Return the git commit of the project: the one ``mlflow run`` recorded, else this package's checkout.

    Returns "" when neither is a git checkout or git is not installed.
    """
    recorded = client.get_run(run_id).data.tags.get(_GIT_COMMIT_TAG, "")
    if recorded:
        return recorded
    checkout = Path(_PACKAGE_DIR).parent
    if not (checkout / ".git").exists():
        return ""
    try:
        result = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def pip_requirements() -> list[str] | None:
    """Return this package's runtime requirements pinned to the installed versions.

    The model ships this package's code, so serving needs what the package
    imports. Pinning them here spares MLflow's requirement inference, which
    loads the model in a subprocess (5 of 9 s per registration, measured with
    MLflow 3.17 on a loaded 2-core machine). Returns None, and MLflow infers
    them, when the package metadata is not installed.
    """
    try:
        declared = importlib.metadata.requires("mlflow-hpo") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    pinned = []
    for line in declared:
        if ";" in line:  # an optional extra such as `; extra == "test"`
            continue
        name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0]
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(line)
    return pinned


def smoke_test(model_uri: str, example: pd.DataFrame, expected: np.ndarray) -> None:
    """Load ``model_uri`` through pyfunc and check it predicts ``expected`` on ``example``.

    The example is scored twice: as the frame that was logged, and as a
    frame rebuilt from its JSON records, which is how a client sends rows.
    Both pass through the signature's schema enforcement.
    """
    loaded = mlflow.pyfunc.load_model(model_uri)
    for label, frame in (("input example", example), ("input example as JSON records", _from_json_records(example))):
        try:
            served = np.asarray(loaded.predict(frame))
        except Exception as exc:  # pyfunc wraps schema and model errors in several types
            raise RegistrationError(
                f"the logged model failed to predict on its {label} ({exc}); it is not registered."
            ) from exc
        if served.shape != np.asarray(expected).shape or not _same(served, np.asarray(expected)):
            raise RegistrationError(
                f"the logged model predicts differently on its {label} after loading than before; "
                "it is not registered."
            )


def _log_checked_model(model: TunedModel, job: Job, parent: ParentRun) -> str:
    example = input_example(job)
    signature = build_signature(model, job, example)
    with _parent_active(parent), tempfile.TemporaryDirectory() as folder:
        # Ship the package's sources only, without the bytecode caches next to them.
        code = Path(folder) / Path(_PACKAGE_DIR).name
        shutil.copytree(_PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            code_paths=[str(code)],
            pip_requirements=pip_requirements(),
            serialization_format="cloudpickle",
        )
    smoke_test(info.model_uri, example, model.predict(example))
    return str(info.model_uri)


def _log_training_dataset(job: Job, parent: ParentRun) -> str:
    """Log the training rows (features and decoded target) as a dataset input of the parent run."""
    frame = job.dataset.raw_train.copy()
    target = job.config.target or "target"
    while target in frame.columns:
        target = f"_{target}"
    frame[target] = decoded_labels(job.dataset.y_train, job.dataset.classes)
    dataset = from_pandas(frame, name=f"{job.dataset.name}-train", targets=target)
    with _parent_active(parent):
        mlflow.log_input(dataset, context="training")
    return str(dataset.digest)


class _parent_active:
    """Make the parent run the active fluent run for a block, without ending it afterwards."""

    def __init__(self, parent: ParentRun) -> None:
        self._parent = parent
        self._started = False

    def __enter__(self) -> None:
        active = mlflow.active_run()
        self._started = active is None or active.info.run_id != self._parent.run_id
        if self._started:
            mlflow.start_run(run_id=self._parent.run_id, nested=active is not None)

    def __exit__(self, *exc_info: Any) -> None:
        if self._started:
            # Leave the parent's status to its owner; only pop it off the fluent stack.
            mlflow.end_run(status="RUNNING")


def _registered_version(
    client: MlflowClient, name: str, job: Job, parent: ParentRun, trial_number: int
) -> ModelVersion | None:
    """Return the version that an earlier run of this study registered for the same winner."""
    same_winner = {TAG_PARENT: parent.run_id, TAG_TRIAL: str(trial_number), TAG_DIGEST: job.dataset.digest}
    for version in client.search_model_versions(f"name = '{_quoted(name)}' and run_id = '{parent.run_id}'"):
        if all(version.tags.get(key) == value for key, value in same_winner.items()):
            return version
    return None


def _mark_challenger(client: MlflowClient, name: str, version: str) -> bool:
    """Point ``challenger`` at ``version`` if it is the newest version of ``name``; return whether it did."""
    newest = client.search_model_versions(
        f"name = '{_quoted(name)}'", max_results=1, order_by=["version_number DESC"]
    )
    if not newest or str(newest[0].version) != version:
        return False
    client.set_registered_model_alias(name, CHALLENGER, version)
    return True


def _type_name(column_type: Any) -> str:
    # DataType members carry a name ("double"); AnyType and nested types only print one.
    return str(getattr(column_type, "name", None) or column_type)


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _from_json_records(frame: pd.DataFrame) -> pd.DataFrame:
    records = json.loads(frame.to_json(orient="records", date_format="iso"))
    return pd.DataFrame.from_records(records, columns=list(frame.columns))


def _same(left: np.ndarray, right: np.ndarray) -> bool:
    if left.dtype.kind in "fc" and right.dtype.kind in "fc":
        return bool(np.allclose(left, right, equal_nan=True))
    return bool(np.array_equal(left.astype(str), right.astype(str)))


def _signature_output(predictions: np.ndarray) -> np.ndarray:
    if predictions.dtype.kind in "OUS":
        return predictions.astype(str)
    return predictions
