"""The shadow pass of the nightly batch: every ``shadow`` version of the registry scores
the chunk's patients beside the active one, and its scores are stored in
:class:`~cds.db.models.ShadowPrediction` and nowhere else.

Inputs: the chunk's :class:`cds.mapping.MappedPatient` objects (already pulled and mapped
for the active version) and the active version's image features by series fingerprint.
A shadow version whose image network has the same weights as the active one reuses those
features; any other encodes the series itself.  Outputs: one ShadowPrediction per patient
and shadow version, with the alert rules it would have fired (``would_alert``).  Nothing
here writes a RiskAssessment, opens an alert or touches the Prediction table, and a
failing shadow version costs only its own rows (a warning names it; the active scoring
goes on).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.batch.alerts import evaluate_rules
from cds.config import Settings
from cds.db import session_scope
from cds.db.models import ShadowPrediction
from cds.mapping import MappedPatient
from cds.scoring import ScoringCore
from model.types import ImageFeatures

if TYPE_CHECKING:
    from cds.batch._scoring import RunContext

log = logging.getLogger("mprtm.batch.shadow")


def image_network_sha256(core: ScoringCore) -> str:
    """sha256 over the image network's weights (equal: the image features are shared)."""
    h = hashlib.sha256()
    for name, tensor in sorted(core.predictor.network.image.state_dict().items()):
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ShadowPass:
    """Shadow versions of one process, loaded on first use and reloaded when the set of
    shadow versions in the registry changes.

    Args:
        settings: effective settings (``model.*`` for loading, ``alerts.*`` for the
            would-be alerts).
        active: the active version's core (its image network is compared).
    """

    def __init__(self, settings: Settings, active: ScoringCore) -> None:
        self.settings = settings
        self.active = active
        self._active_image_sha = ""
        self.cores: dict[int, ScoringCore] = {}
        self.shares_images: dict[int, bool] = {}
        self._failed: set[int] = set()

    def _refresh(self, session: Session) -> None:
        from cds.registry import shadow_versions

        wanted = {mv.id: mv.checkpoint_path for mv in shadow_versions(session)}
        for vid in set(self.cores) - set(wanted):
            del self.cores[vid]
        for vid, path in wanted.items():
            if vid in self.cores or vid in self._failed:
                continue
            try:
                core = ScoringCore.load(self.settings.replace(model__checkpoint=path))
            except Exception as exc:  # noqa: BLE001  (a broken shadow never stops the batch)
                log.warning("shadow model version %s cannot be loaded: %s", vid, exc)
                self._failed.add(vid)
                continue
            if not self._active_image_sha:
                self._active_image_sha = image_network_sha256(self.active)
            self.cores[vid] = core
            self.shares_images[vid] = image_network_sha256(core) == self._active_image_sha
            log.info(
                "shadow model version %s loaded (%s image features)",
                vid,
                "shares the active version's" if self.shares_images[vid] else "its own",
            )

    def run(
        self,
        sessions: sessionmaker[Session],
        ctx: RunContext,
        mapped: Mapping[str, MappedPatient],
        image_cache: Mapping[str, ImageFeatures],
    ) -> int:
        """Score and store the chunk under every shadow version; returns rows stored."""
        with session_scope(sessions) as s:
            self._refresh(s)
        if not mapped:
            return 0
        stored = 0
        patients = list(mapped.values())
        for vid, core in self.cores.items():
            try:
                cache = dict(image_cache) if self.shares_images[vid] else None
                preds = core.predict(patients, cache)
                with session_scope(sessions) as s:
                    for m in patients:
                        got = preds.get(m.patient_id)
                        if got is None or isinstance(got, BaseException):
                            continue
                        self._store(s, ctx, vid, core, m, got)
                        stored += 1
            except Exception as exc:  # noqa: BLE001
                log.warning("shadow model version %s failed in run %s: %s", vid, ctx.run_id, exc)
        return stored

    def _store(
        self,
        s: Session,
        ctx: RunContext,
        vid: int,
        core: ScoringCore,
        m: MappedPatient,
        pred: Any,
    ) -> None:
        scored = core.scored(m, pred)
        p = scored.prediction
        previous = s.scalar(
            select(ShadowPrediction)
            .where(
                ShadowPrediction.model_version_id == vid,
                ShadowPrediction.patient_fhir_id == m.patient_id,
                ShadowPrediction.run_id != ctx.run_id,
            )
            .order_by(ShadowPrediction.created_at.desc(), ShadowPrediction.id.desc())
            .limit(1)
        )
        row = s.scalar(
            select(ShadowPrediction).where(
                ShadowPrediction.run_id == ctx.run_id,
                ShadowPrediction.model_version_id == vid,
                ShadowPrediction.patient_fhir_id == m.patient_id,
            )
        )
        if row is None:
            row = ShadowPrediction(
                run_id=ctx.run_id, model_version_id=vid, patient_fhir_id=m.patient_id
            )
            s.add(row)
        row.created_at = dt.datetime.now(dt.UTC)
        row.as_of = ctx.as_of
        row.probabilities = dict(p.probabilities)
        row.tiers = dict(p.tiers)
        row.fibrosis_burden = p.fibrosis_burden
        row.input_fingerprint = scored.input_fingerprint[:64]
        row.would_alert = [f.reason for f in evaluate_rules(self.settings.alerts, row, previous)]
        s.flush()
