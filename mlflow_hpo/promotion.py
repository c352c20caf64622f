"""The champion gate: registry aliases move only to a model that is not worse.

A version faces the gate against the version that the ``champion`` alias
points to. Both are loaded from the registry and scored on the same held-out rows
with the same scikit-learn scorer; ``champion`` moves to the candidate only
if its score is not worse by more than a margin in the metric's direction.
The decision, both scores and the previous holder are stored as version tags.
Registry stages are never read or written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import ConfigError, HpoError
from mlflow_hpo.metrics import Objective, resolve_objective

_logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"

PROMOTED = "promoted"
REJECTED = "rejected"
FORCED = "forced"
KEPT = "kept"
NOT_COMPARED = "not_compared"

TAG_DECISION = "mlflow_hpo.promotion.decision"
TAG_REASON = "mlflow_hpo.promotion.reason"
TAG_METRIC = "mlflow_hpo.promotion.metric"
TAG_MARGIN = "mlflow_hpo.promotion.margin"
TAG_CANDIDATE_SCORE = "mlflow_hpo.promotion.candidate_score"
TAG_CHAMPION_SCORE = "mlflow_hpo.promotion.champion_score"
TAG_PREVIOUS = "mlflow_hpo.promotion.previous_champion"
TAG_HELD_OUT = "mlflow_hpo.promotion.held_out_digest"
TAG_HELD_OUT_ROWS = "mlflow_hpo.promotion.held_out_rows"
TAG_REPLACED_BY = "mlflow_hpo.promotion.replaced_by"
# JSON list of the decisions a version had before its current one, oldest first.
TAG_HISTORY = "mlflow_hpo.promotion.history"
# MLflow's limit on a tag value; the oldest decisions are dropped to fit.
_MAX_TAG_VALUE = 8000


class PromotionError(HpoError):
    """A registered version could not be loaded or scored for the champion gate."""


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Rows that both versions are scored on.

    Attributes:
        X: Feature columns as loaded (the models apply their own preprocessing).
        y: Target values with the original class labels.
        objective: Scorer and direction of the comparison.
        digest: Content hash of the rows, stored with the decision.
    """

    X: pd.DataFrame
    y: np.ndarray
    objective: Objective
    digest: str


@dataclasses.dataclass(frozen=True)
class Decision:
    """Outcome of the champion gate for one version.

    ``outcome`` is ``promoted`` (the gate moved ``champion`` here),
    ``rejected`` (the champion stays), ``forced`` (moved without the gate, for
    ``reason``), ``kept`` (this version already held ``champion``; nothing
    changed) or ``not_compared`` (the held-out rows include rows that the
    champion was trained on, so the champion stays). Scores are None when
    they were not computed.
    """

    name: str
    version: str
    outcome: str
    reason: str
    metric: str = ""
    margin: float = 0.0
    candidate_score: float | None = None
    champion_score: float | None = None
    previous_champion: str | None = None
    held_out_digest: str = ""
    held_out_rows: int = 0

    @property
    def is_champion(self) -> bool:
        """True when ``champion`` points to this version after the decision."""
        return self.outcome not in (REJECTED, NOT_COMPARED)

    def tags(self) -> dict[str, str]:
        """Return the version tags that record this decision."""
        return {
            TAG_DECISION: self.outcome,
            TAG_REASON: self.reason,
            TAG_METRIC: self.metric,
            TAG_MARGIN: repr(self.margin),
            TAG_CANDIDATE_SCORE: _text(self.candidate_score),
            TAG_CHAMPION_SCORE: _text(self.champion_score),
            TAG_PREVIOUS: self.previous_champion or "none",
            TAG_HELD_OUT: self.held_out_digest,
            TAG_HELD_OUT_ROWS: str(self.held_out_rows),
        }

    def describe(self) -> str:
        """Return the decision as one sentence for logs, the CLI and ``summary.md``."""
        moved = f"`{CHAMPION}` moved to version {self.version}"
        if self.previous_champion:
            moved = f"`{CHAMPION}` moved from version {self.previous_champion} to version {self.version}"
        verb = {
            PROMOTED: moved,
            FORCED: f"{moved} without the gate",
            KEPT: f"`{CHAMPION}` already points to version {self.version}; nothing changed",
            REJECTED: f"`{CHAMPION}` stays on version {self.previous_champion}",
            NOT_COMPARED: f"`{CHAMPION}` stays on version {self.previous_champion} without a comparison",
        }[self.outcome]
        return f"{verb} ({self.reason})."


def champion_version(client: MlflowClient, name: str) -> str | None:
    """Return the version that ``champion`` points to, or None."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            return None
        raise


def score_version(name: str, version: str, held_out: HeldOut) -> float:
    """Load ``name`` version ``version`` from the registry and score it on ``held_out``.

    Raises:
        PromotionError: the version has no scikit-learn flavor, or it failed
            to predict on the rows.
    """
    uri = f"models:/{name}/{version}"
    try:
        model = mlflow.sklearn.load_model(uri)
        return float(held_out.objective.scorer(model, held_out.X, held_out.y))
    except Exception as exc:  # loading and scoring raise many types; all mean "cannot score"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PromotionError(f"version {version} of {name!r} could not be scored: {first_line}") from exc


def run_gate(client: MlflowClient, name: str, version: str, held_out: HeldOut, *, margin: float = 0.0) -> Decision:
    """Score ``version`` against the champion and move ``champion`` if it is not worse.

    With no champion, the version is promoted. A version that ``champion``
    already points to is left as it is, so running the gate again is harmless.
    A champion that cannot be scored on ``held_out`` (for example because the
    columns changed) stays, and the reason names the forced promotion as the
    way out.

    Raises:
        PromotionError: the candidate itself could not be scored.
    """
    previous = champion_version(client, name)
    base = Decision(
        name=name,
        version=version,
        outcome=KEPT,
        reason="the gate ran before",
        metric=held_out.objective.name,
        margin=margin,
        previous_champion=previous,
        held_out_digest=held_out.digest,
        held_out_rows=len(held_out.X),
    )
    if previous == version:
        return base

    candidate = score_version(name, version, held_out)
    if previous is None:
        return apply_decision(
            client, dataclasses.replace(base, outcome=PROMOTED, reason="no version had the alias", candidate_score=candidate)
        )

    try:
        incumbent = score_version(name, previous, held_out)
    except PromotionError as exc:
        _logger.warning("Champion gate of %s version %s: %s.", name, version, exc)
        reason = f"{exc}; force a promotion with a reason to replace it"
        return apply_decision(
            client, dataclasses.replace(base, outcome=REJECTED, reason=reason, candidate_score=candidate)
        )

    outcome, reason = compare_scores(
        candidate, incumbent, direction=held_out.objective.direction, margin=margin, metric=held_out.objective.name
    )
    decided = dataclasses.replace(
        base, outcome=outcome, reason=reason, candidate_score=candidate, champion_score=incumbent
    )
    return apply_decision(client, decided)


def compare_scores(candidate: float, champion: float, *, direction: str, margin: float, metric: str) -> tuple[str, str]:
    """Return (outcome, reason): ``promoted`` unless ``candidate`` is worse than ``champion`` by more than ``margin``.

    A non-finite candidate score is rejected, and a non-finite champion score
    loses to any finite candidate.
    """
    if not math.isfinite(candidate):
        return REJECTED, f"the candidate's {metric} is {candidate}"
    worse_by = champion - candidate if direction == "maximize" else candidate - champion
    scores = f"{metric} {candidate:.6g} against the champion's {champion:.6g}"
    if not math.isfinite(champion) or worse_by <= margin:
        return PROMOTED, f"{scores}, not worse by more than the margin {margin:g}"
    return REJECTED, f"{scores}, worse by {worse_by:.3g}, more than the margin {margin:g}"


def force_promotion(
    client: MlflowClient, name: str, version: str, *, reason: str, held_out: HeldOut | None = None
) -> Decision:
    """Move ``champion`` to ``version`` without the gate and record ``reason``.

    Scores are recorded when ``held_out`` is given; a champion that cannot
    be scored gets no score.
    """
    if not reason.strip():
        raise ConfigError("a forced promotion needs a reason; pass reason='<why the gate is skipped>'.")
    previous = champion_version(client, name)
    candidate = champion_score = None
    if held_out is not None:
        candidate = score_version(name, version, held_out)
        if previous is not None and previous != version:
            try:
                champion_score = score_version(name, previous, held_out)
            except PromotionError as exc:
                _logger.warning("Forced promotion of %s version %s: %s.", name, version, exc)
    decision = Decision(
        name=name,
        version=version,
        outcome=KEPT if previous == version else FORCED,
        reason=f"forced: {reason.strip()}",
        metric=held_out.objective.name if held_out else "",
        candidate_score=candidate,
        champion_score=champion_score,
        previous_champion=previous,
        held_out_digest=held_out.digest if held_out else "",
        held_out_rows=len(held_out.X) if held_out else 0,
    )
    if decision.outcome == KEPT:
        return decision
    return apply_decision(client, decision)


def apply_decision(client: MlflowClient, decision: Decision) -> Decision:
    """Record ``decision`` as version tags, then move ``champion`` when the outcome is promoted or forced.

    A different decision the version had before moves into its history tag
    first; the same decision made again leaves the tags as they are.
    """
    earlier = client.get_model_version(decision.name, decision.version).tags
    recorded = {key: earlier.get(key, "") for key in decision.tags()}
    if TAG_DECISION in earlier and recorded != decision.tags():
        history = json.loads(earlier.get(TAG_HISTORY, "[]"))
        history.append({key.rsplit(".", 1)[1]: value for key, value in recorded.items()})
        text = json.dumps(history)
        while len(text) > _MAX_TAG_VALUE and len(history) > 1:
            history.pop(0)
            text = json.dumps(history)
        client.set_model_version_tag(decision.name, decision.version, TAG_HISTORY, text)
    for key, value in decision.tags().items():
        client.set_model_version_tag(decision.name, decision.version, key, value)
    # NOTE: two gates of the same model that run at once can both read the same
    # champion; the alias then ends on whichever writes last.
    if decision.outcome in (PROMOTED, FORCED):
        client.set_registered_model_alias(decision.name, CHAMPION, decision.version)
        if TAG_REPLACED_BY in client.get_model_version(decision.name, decision.version).tags:
            # A version that takes champion back is no longer replaced.
            client.delete_model_version_tag(decision.name, decision.version, TAG_REPLACED_BY)
        if decision.previous_champion:
            client.set_model_version_tag(decision.name, decision.previous_champion, TAG_REPLACED_BY, decision.version)
    _logger.info("Champion gate of %s version %s: %s", decision.name, decision.version, decision.describe())
    return decision


def load_held_out(data: str, *, target: str, metric: str, task: str) -> HeldOut:
    """Load a table as held-out rows for `run_gate`; ``target`` and ``metric`` fall back to the table's defaults."""
    from mlflow_hpo.data import detect_task, frame_digest, load_table

    frame, default_target, _ = load_table(data)
    target = target or default_target
    if target not in frame.columns:
        columns = ", ".join(str(c) for c in list(frame.columns)[:20])
        raise ConfigError(f"target={target!r} is not a column of data={data!r}; columns are: {columns}.")
    frame = frame.loc[frame[target].notna()].reset_index(drop=True)
    if frame.empty:
        raise ConfigError(f"data={data!r} has no row with a value in target {target!r}; pass held-out rows.")
    y = frame[target]
    objective = resolve_objective(metric or "auto", task or detect_task(y))
    return HeldOut(X=frame.drop(columns=[target]), y=y.to_numpy(), objective=objective, digest=frame_digest(frame))


def _text(score: float | None) -> str:
    return "" if score is None else repr(score)


def promote(
    name: str,
    *,
    version: str = "",
    data: str = "",
    target: str = "",
    metric: str = "",
    force: bool = False,
    reason: str = "",
    margin: float = 0.0,
) -> Decision:
    """Run the champion gate for a registered version, or force a promotion.

    Args:
        name: Registered model name.
        version: Version to promote; empty means the one that ``challenger`` points to.
        data: Held-out rows (``sklearn:<name>`` or a CSV/Parquet path) that
            both versions are scored on; required unless ``force``. Pass rows
            that neither version was trained on.
        target: Target column; empty means the column the version was tuned
            on, else the table's default.
        metric: scikit-learn scorer name; empty means the version's tuning metric.
        force: Move ``champion`` without the gate; needs ``reason``.
        reason: Why the gate is skipped, recorded on the version.
        margin: How much worse than the champion the version may score and
            still be promoted, in the metric's units (at least 0).

    Raises:
        ConfigError: an unknown model or version, or missing data, reason or margin.
    """
    from mlflow_hpo.registry import TAG_METRIC as TUNED_METRIC
    from mlflow_hpo.registry import TAG_TARGET, TAG_TASK

    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"promote_margin must be a number of at least 0, got promote_margin={margin}; use 0.")
    if force and not reason.strip():
        raise ConfigError("force=true needs a reason; pass reason='<why the gate is skipped>'.")
    if not force and not data:
        raise ConfigError(
            "the champion gate needs held-out rows; pass data=<CSV/Parquet path or sklearn:name>, "
            "or force=true with a reason."
        )
    client = MlflowClient()
    version = resolve_version(client, name, version)
    tags = client.get_model_version(name, version).tags
    held_out = None
    if data:
        held_out = load_held_out(
            data,
            target=target or tags.get(TAG_TARGET, ""),
            metric=metric or tags.get(TUNED_METRIC, ""),
            task=tags.get(TAG_TASK, ""),
        )
    if force:
        return force_promotion(client, name, version, reason=reason, held_out=held_out)
    assert held_out is not None
    return run_gate(client, name, version, held_out, margin=margin)


def resolve_version(client: MlflowClient, name: str, version: str) -> str:
    """Return ``version`` checked against the registry, or the version that ``challenger`` points to."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ConfigError(
            f"registered model {name!r} not found in the model registry; check model_name and MLFLOW_TRACKING_URI."
        ) from None
    if not version:
        try:
            return str(client.get_model_version_by_alias(name, CHALLENGER).version)
        except MlflowException:
            raise ConfigError(
                f"alias {CHALLENGER!r} of {name!r} not found; pass version=<number>."
            ) from None
    try:
        return str(client.get_model_version(name, version).version)
    except MlflowException:
        raise ConfigError(f"version={version!r} of {name!r} not found; pass an existing version number.") from None
