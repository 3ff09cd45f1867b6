"""The model registry: versions as rows with a state, audited changes, the promotion gate.

States run ``candidate -> shadow -> active -> retired`` (a candidate may go straight to
active; any version but the active one may be retired).  Exactly one version is
``active``: it alone reaches clinicians.  ``shadow`` versions are scored by the nightly
batch and stored apart (:mod:`cds.batch._shadow`).  Every change writes a
:class:`~cds.db.models.ModelVersionEvent` (who, when, why, forced or not).

A version becomes active only when its latest stored ``mprtm validate`` report meets
``[registry]`` (:func:`gate_failures`), or with ``force`` and a reason.  Two promotions
racing each other: the state changes are conditional updates guarded by a partial unique
index, so one wins and the other gets :class:`ConcurrentChangeError`.

``[model] checkpoint`` bootstraps an empty registry (:func:`bootstrap`): the file is
registered and made active.  Serving processes ask :func:`active_version` at each run or
request, so a promotion needs no restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds.config import RegistrySettings, Settings
from cds.db.models import ModelValidation, ModelVersion, ModelVersionEvent
from cds.errors import MprtmError

#: Allowed state changes (from, to).
TRANSITIONS = frozenset(
    {
        ("candidate", "shadow"),
        ("candidate", "active"),
        ("shadow", "active"),
        ("candidate", "retired"),
        ("shadow", "retired"),
    }
)


class RegistryError(MprtmError):
    """A registry operation cannot be done (unknown version, bad state change)."""


class GateRefusedError(RegistryError):
    """Promotion to active refused: the stored validation does not meet ``[registry]``."""

    def __init__(self, version_id: int, failures: list[str]) -> None:
        self.failures = failures
        super().__init__(
            f"model version {version_id} not promoted to active: "
            + "; ".join(failures)
            + " (use --force --reason TEXT to override; it is audited)"
        )


class ConcurrentChangeError(RegistryError):
    """Another process changed the version's state (or the active version) meanwhile."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def get_version(session: Session, version_id: int) -> ModelVersion:
    """The version row, or :class:`RegistryError` naming the id."""
    mv = session.get(ModelVersion, version_id)
    if mv is None:
        raise RegistryError(f"model version {version_id} is not registered")
    return mv


def active_version(session: Session) -> ModelVersion | None:
    """The active version, or None when the registry has none."""
    return session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))


def shadow_versions(session: Session) -> list[ModelVersion]:
    """Versions in shadow, oldest first."""
    stmt = select(ModelVersion).where(ModelVersion.state == "shadow").order_by(ModelVersion.id)
    return list(session.scalars(stmt))


def _event(
    session: Session,
    mv: ModelVersion,
    *,
    actor: str,
    action: str,
    from_state: str | None,
    to_state: str | None,
    reason: str = "",
    forced: bool = False,
    detail: Mapping[str, Any] | None = None,
) -> None:
    session.add(
        ModelVersionEvent(
            model_version_id=mv.id,
            actor=actor,
            action=action,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            forced=forced,
            detail=dict(detail or {}),
            at=_now(),
        )
    )


def register(session: Session, path: str | Path, *, actor: str, reason: str = "") -> ModelVersion:
    """Register a checkpoint file as a ``candidate``.

    Args:
        session: open session (the caller commits).
        path: the checkpoint file; it is read and checked (format, version).
        actor: who registers it (audited).
        reason: why (audited).

    Raises:
        RegistryError: the file is already registered (its version id is named).
        model.errors.CheckpointError: the file is not a readable M-PRTM checkpoint.
    """
    from model.checkpoint import file_sha256, load_checkpoint

    ckpt = load_checkpoint(path)
    sha = file_sha256(path)
    existing = session.scalar(select(ModelVersion.id).where(ModelVersion.checkpoint_sha256 == sha))
    if existing is not None:
        raise RegistryError(f"checkpoint {path} is already registered as model version {existing}")
    mv = ModelVersion(
        name="M-PRTM",
        version=f"mprtm-{sha[:12]}",
        checkpoint_sha256=sha,
        checkpoint_path=str(Path(path).resolve()),
        metrics=dict(ckpt.metrics or {}),
        card_markdown=ckpt.card_markdown,
        synthetic_training_data=bool(ckpt.synthetic_training_data),
        state="candidate",
        state_changed_at=_now(),
        created_at=_now(),
    )
    session.add(mv)
    session.flush()
    _event(
        session,
        mv,
        actor=actor,
        action="register",
        from_state=None,
        to_state="candidate",
        reason=reason,
        detail={"path": str(path)},
    )
    return mv


def validation_summary(report: Mapping[str, Any], limits: RegistrySettings) -> dict[str, Any]:
    """The figures the gate reads, from a ``validation.json`` (``docs/local-validation.md``)."""
    overall = report.get("overall") or {}
    gate = overall.get(limits.gate_outcome) or {}
    ci = gate.get("auroc_ci") or [None, None]
    eces = {o: v.get("ece") for o, v in overall.items() if isinstance(v, dict)}
    known = {o: float(e) for o, e in eces.items() if e is not None}
    worst = max(known.items(), key=lambda kv: kv[1]) if known else (None, None)
    ratios = [
        (f"{g.get('variable')}={g.get('level')}", g.get("flag_rate_ratio"))
        for g in report.get("subgroups") or []
        if g.get("outcome") == limits.gate_outcome
    ]
    return {
        "outcome": limits.gate_outcome,
        "n_patients": report.get("n_patients"),
        "as_of": report.get("as_of"),
        "auroc": gate.get("auroc"),
        "auroc_ci_lower": ci[0] if ci else None,
        "max_ece": worst[1],
        "max_ece_outcome": worst[0],
        "flag_rate_ratios": {k: v for k, v in ratios},
    }


def gate_failures(summary: Mapping[str, Any], limits: RegistrySettings) -> list[str]:
    """Each criterion of ``[registry]`` the summary fails, named (empty: the gate passes)."""
    out: list[str] = []
    o = limits.gate_outcome
    low = summary.get("auroc_ci_lower")
    if low is None:
        out.append(f"no AUROC CI for {o!r} in the report")
    elif float(low) < limits.min_auroc_ci_lower:
        out.append(
            f"AUROC CI lower bound for {o} {float(low):.3f} < "
            f"registry.min_auroc_ci_lower {limits.min_auroc_ci_lower}"
        )
    ece = summary.get("max_ece")
    if ece is None:
        out.append("no ECE in the report")
    elif float(ece) > limits.max_ece:
        out.append(
            f"ECE of {summary.get('max_ece_outcome')} {float(ece):.3f} > "
            f"registry.max_ece {limits.max_ece}"
        )
    for group, ratio in (summary.get("flag_rate_ratios") or {}).items():
        if ratio is None:
            continue
        if not limits.flag_rate_ratio_min <= float(ratio) <= limits.flag_rate_ratio_max:
            out.append(
                f"flag-rate ratio of subgroup {group} ({o}) {float(ratio):.2f} outside "
                f"[registry.flag_rate_ratio_min {limits.flag_rate_ratio_min}, "
                f"registry.flag_rate_ratio_max {limits.flag_rate_ratio_max}]"
            )
    return out


def attach_validation(
    session: Session,
    version_id: int,
    report: Mapping[str, Any],
    *,
    limits: RegistrySettings,
    actor: str,
    source: str = "",
) -> ModelValidation:
    """Store a ``mprtm validate`` report for a version.

    Raises:
        RegistryError: the report belongs to another checkpoint (``checkpoint.sha256``)
            or has no ``overall`` section.
    """
    mv = get_version(session, version_id)
    sha = (report.get("checkpoint") or {}).get("sha256")
    if sha != mv.checkpoint_sha256:
        raise RegistryError(
            f"validation report {source or '<report>'} is of checkpoint {str(sha)[:12]}, "
            f"not of model version {mv.id} ({mv.checkpoint_sha256[:12]})"
        )
    if not isinstance(report.get("overall"), dict):
        raise RegistryError(f"validation report {source or '<report>'} has no 'overall' section")
    summary = validation_summary(report, limits)
    row = ModelValidation(
        model_version_id=mv.id,
        report=dict(report),
        summary=summary,
        source=source[:500],
        created_at=_now(),
    )
    session.add(row)
    session.flush()
    _event(
        session,
        mv,
        actor=actor,
        action="validation",
        from_state=mv.state,
        to_state=mv.state,
        detail={"validation_id": row.id, "source": source[:200]},
    )
    return row


def latest_validation(session: Session, version_id: int) -> ModelValidation | None:
    stmt = (
        select(ModelValidation)
        .where(ModelValidation.model_version_id == version_id)
        .order_by(ModelValidation.created_at.desc(), ModelValidation.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def _set_state(session: Session, mv: ModelVersion, expected: str, new: str) -> None:
    """Conditional update: changes the row only if it is still in ``expected``."""
    res = session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == mv.id, ModelVersion.state == expected)
        .values(state=new, state_changed_at=_now())
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentChangeError(
            f"model version {mv.id} is no longer {expected!r}: another change was made "
            "at the same time; run `mprtm model list` and try again"
        )
    session.expire(mv, ["state", "state_changed_at"])


def promote(
    session: Session,
    version_id: int,
    to: str,
    *,
    limits: RegistrySettings,
    actor: str,
    force: bool = False,
    reason: str = "",
) -> ModelVersion:
    """Move a version to ``shadow`` or ``active`` (the caller commits).

    Promotion to active retires the previously active version in the same transaction.

    Raises:
        RegistryError: unknown version, or a state change that is not allowed, or
            ``force`` without a reason.
        GateRefusedError: the gate fails and ``force`` is not given.
        ConcurrentChangeError: another promotion changed the states meanwhile.
    """
    if to not in ("shadow", "active"):
        raise RegistryError(f"cannot promote to {to!r}: use shadow or active")
    if force and not reason.strip():
        raise RegistryError("--force needs --reason TEXT (it is audited)")
    mv = get_version(session, version_id)
    start = mv.state
    if (start, to) not in TRANSITIONS:
        raise RegistryError(f"model version {mv.id} is {start}: it cannot become {to}")
    detail: dict[str, Any] = {}
    if to == "active":
        v = latest_validation(session, mv.id)
        failures = (
            [f"no stored `mprtm validate` report for model version {mv.id}"]
            if v is None
            else gate_failures(v.summary, limits)
        )
        if failures and not force:
            raise GateRefusedError(mv.id, failures)
        detail = {"validation_id": None if v is None else v.id, "gate_failures": failures}
        old = active_version(session)
        try:
            if old is not None:
                _set_state(session, old, "active", "retired")
                _event(
                    session,
                    old,
                    actor=actor,
                    action="retire",
                    from_state="active",
                    to_state="retired",
                    reason=f"replaced by model version {mv.id}",
                )
            _set_state(session, mv, start, "active")
            session.flush()
        except IntegrityError as exc:
            raise ConcurrentChangeError(
                f"model version {mv.id}: another version became active at the same time; "
                "run `mprtm model list` and try again"
            ) from exc
    else:
        _set_state(session, mv, start, to)
    _event(
        session,
        mv,
        actor=actor,
        action="promote",
        from_state=start,
        to_state=to,
        reason=reason,
        forced=bool(force and detail.get("gate_failures")),
        detail=detail,
    )
    session.flush()
    session.refresh(mv)
    return mv


def retire(session: Session, version_id: int, *, actor: str, reason: str = "") -> ModelVersion:
    """Retire a candidate or shadow version (the active one is replaced by promoting
    another, never left empty)."""
    mv = get_version(session, version_id)
    if mv.state == "active":
        raise RegistryError(
            f"model version {mv.id} is active: promote another version to active instead"
        )
    if (mv.state, "retired") not in TRANSITIONS:
        raise RegistryError(f"model version {mv.id} is {mv.state}: it cannot be retired")
    start = mv.state
    _set_state(session, mv, start, "retired")
    _event(
        session,
        mv,
        actor=actor,
        action="retire",
        from_state=start,
        to_state="retired",
        reason=reason,
    )
    session.flush()
    session.refresh(mv)
    return mv


def bootstrap(session: Session, settings: Settings) -> ModelVersion | None:
    """With an empty registry, register ``[model] checkpoint`` and make it active.

    Returns the active version (None when the registry is empty and the configured file
    does not exist).  A version registered earlier by a running service (before the
    registry existed) is reused.
    """
    mv = active_version(session)
    if mv is not None:
        return mv
    if session.scalar(select(func.count(ModelVersion.id))):
        return None  # versions exist but none is active: an admin decides
    path = settings.model.checkpoint
    if not Path(path).is_file():
        return None
    mv = register(session, path, actor="bootstrap", reason="[model] checkpoint")
    _set_state(session, mv, "candidate", "active")
    _event(
        session,
        mv,
        actor="bootstrap",
        action="promote",
        from_state="candidate",
        to_state="active",
        reason="[model] checkpoint with an empty registry",
    )
    session.flush()
    session.refresh(mv)
    return mv


def serving_settings(settings: Settings, session: Session) -> Settings:
    """``settings`` with ``model.checkpoint`` set to the active version's file
    (bootstrapping an empty registry from ``[model] checkpoint``)."""
    mv = bootstrap(session, settings)
    if mv is None or mv.checkpoint_path == settings.model.checkpoint:
        return settings
    return settings.replace(model__checkpoint=mv.checkpoint_path)


def version_dict(session: Session, mv: ModelVersion) -> dict[str, Any]:
    """One row of ``mprtm model list --json``."""
    v = latest_validation(session, mv.id)
    return {
        "id": mv.id,
        "state": mv.state,
        "created": mv.created_at.isoformat() if mv.created_at else None,
        "checkpoint_sha256": mv.checkpoint_sha256,
        "version": mv.version,
        "checkpoint_path": mv.checkpoint_path,
        "state_changed": mv.state_changed_at.isoformat() if mv.state_changed_at else None,
        "validation": None
        if v is None
        else {"id": v.id, "created": v.created_at.isoformat(), **v.summary},
    }
