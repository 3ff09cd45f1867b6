"""Admin page of the model registry (role ``admin``): every version with its state and
latest validation, the audited changes (forced promotions with their reason), and each
shadow version compared with the active one (:mod:`cds.shadow_compare`)."""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from sqlalchemy import select

from cds.db.models import ModelVersion, ModelVersionEvent
from cds.inbox._db import db, settings
from cds.inbox.admin import bp
from cds.inbox.auth import admin_required
from cds.registry import shadow_versions, version_dict
from cds.shadow_compare import TIERS, compare

#: Most runs a comparison reads.
MAX_RUNS = 90


@bp.get("/registry")
@admin_required
def registry() -> Any:
    raw = request.args.get("runs", "7")
    last_runs = min(MAX_RUNS, max(1, int(raw))) if raw.isdigit() and len(raw) <= 3 else 7
    session = db()
    versions = [
        version_dict(session, mv)
        for mv in session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc()))
    ]
    events = list(
        session.scalars(select(ModelVersionEvent).order_by(ModelVersionEvent.at.desc()).limit(100))
    )
    outcome = settings().alerts.outcome
    comparisons = [
        (mv, compare(session, mv.id, outcome=outcome, last_runs=last_runs))
        for mv in shadow_versions(session)
    ]
    return render_template(
        "inbox/admin/registry.html",
        versions=versions,
        events=events,
        comparisons=comparisons,
        tiers=TIERS,
        last_runs=last_runs,
        outcome=outcome,
    )


#: Monitor results per version the monitoring page shows (newest last).
MONITOR_HISTORY = 30


@bp.get("/monitoring")
@admin_required
def monitoring() -> Any:
    """Admin alerts of the monitor and each version's signals over its latest checks."""
    from cds.db.models import AdminAlert, MonitorResult

    session = db()
    alerts = list(
        session.scalars(select(AdminAlert).order_by(AdminAlert.created_at.desc()).limit(50))
    )
    histories = []
    for mv in session.scalars(
        select(ModelVersion).where(ModelVersion.state.in_(("active", "shadow")))
    ):
        results = list(
            session.scalars(
                select(MonitorResult)
                .where(MonitorResult.model_version_id == mv.id)
                .order_by(MonitorResult.created_at.desc(), MonitorResult.id.desc())
                .limit(MONITOR_HISTORY)
            )
        )[::-1]
        names: dict[str, tuple[str, float | None]] = {}
        for r in results:
            for sig in r.signals:
                names.setdefault(sig["name"], (sig["kind"], sig.get("threshold")))
        table = [
            (name, kind, threshold, [_signal(r.signals, name) for r in results])
            for name, (kind, threshold) in sorted(names.items(), key=lambda kv: kv[1][0])
        ]
        histories.append((mv, results, table))
    return render_template("inbox/admin/monitoring.html", alerts=alerts, histories=histories)


def _signal(signals: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((s for s in signals if s["name"] == name), None)
