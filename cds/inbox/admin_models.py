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
