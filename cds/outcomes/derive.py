"""Outcome labels of a whole cohort from a FHIR source (``mprtm outcomes``).

Reads each patient's Patient, Encounter, Condition, Procedure and Observation resources
as plain JSON (a malformed resource is a warning naming it, never a stopped run), derives
the outcomes with :mod:`cds.outcomes.rules`, and writes:

* ``labels.csv``: the columns ``mprtm train``/``evaluate``/``validate`` read
  (:data:`LABEL_COLUMNS`); a censored outcome is an empty cell; a patient with every
  outcome censored has no row;
* ``labels-report.json``: counts per outcome and per rule, the censored patients with
  their reasons, the warnings, and (when a truth file is given) agreement per outcome.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cds.outcomes.rules import CAUSE_OF_DEATH, WINDOW_DAYS, Json, PatientOutcome, derive_patient
from connectors.errors import FhirError
from connectors.fhir.ndjson import NdjsonFolderSource
from model.types import OUTCOMES

log = logging.getLogger("mprtm.outcomes")

LABEL_COLUMNS = (
    "patient_id",
    "death",
    "cv_death",
    "cv_death_cause",
    "rehospitalization",
    "rehosp_days",
    "cardiology_rehospitalization",
    "macce",
    "macce_cause",
    "fibrosis_burden",
)
TYPES = ("Encounter", "Condition", "Procedure", "Observation")


class RawSource(Protocol):
    """Patients and their resources as plain JSON."""

    def patient_ids(self) -> list[str]: ...

    def patient(self, pid: str) -> Json: ...

    def resources(self, pid: str, rtype: str) -> list[Json]: ...


class NdjsonRaw:
    """:class:`RawSource` over a Bulk Data NDJSON folder.

    Args:
        source: the opened folder.
        cohort: ``all``, ``group:<id>`` or ``search:<query>``.
    """

    def __init__(self, source: NdjsonFolderSource, cohort: str = "all") -> None:
        self.source = source
        self.cohort = cohort

    def patient_ids(self) -> list[str]:
        return self.source.cohort_patient_ids(self.cohort)

    def patient(self, pid: str) -> Json:
        return self.source.patient_json(pid)

    def resources(self, pid: str, rtype: str) -> list[Json]:
        out = list(self.source.patient_resources(pid, rtype))
        if rtype == "Observation":  # only the cause of death is read from Observations
            return [o for o in out if _is_contact_or_cause(o)]
        return out


def _is_contact_or_cause(obs: Json) -> bool:
    codes = {c.get("code") for c in (obs.get("code") or {}).get("coding") or []}
    return CAUSE_OF_DEATH in codes or bool(obs.get("effectiveDateTime"))


class RestRaw:
    """:class:`RawSource` over a FHIR REST server (searches by patient, pages followed).

    Args:
        http: the server's :class:`connectors.fhir._http.FhirHttp`.
        patient_ids: the cohort's patient ids.
        since: only resources dated after this day are needed (Encounter ``date``
            search); the whole history is read when None.
    """

    def __init__(self, http: Any, patient_ids: list[str], since: dt.date | None = None) -> None:
        self.http = http
        self.ids = patient_ids
        self.since = since

    def patient_ids(self) -> list[str]:
        return list(self.ids)

    def patient(self, pid: str) -> Json:
        return self.http.get_json(f"Patient/{pid}", what=f"Patient/{pid}")

    def resources(self, pid: str, rtype: str) -> list[Json]:
        params: dict[str, str | list[str]] = {"subject": f"Patient/{pid}", "_count": "200"}
        out: list[Json] = []
        url: str | None = rtype
        what = f"Patient/{pid}: {rtype} search"
        while url:
            bundle = self.http.get_json(url, params=params, what=what)
            params = {}
            for entry in bundle.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and res.get("resourceType") == rtype:
                    out.append(res)
            url = next(
                (lk.get("url") for lk in bundle.get("link") or [] if lk.get("relation") == "next"),
                None,
            )
        return out


@dataclass
class Derived:
    """Every patient's outcome and the report."""

    outcomes: list[PatientOutcome] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    as_of: dt.date = dt.date.min
    data_cut: dt.date = dt.date.max


def derive_all(source: RawSource, as_of: dt.date, data_cut: dt.date) -> Derived:
    """Derive every cohort patient's outcomes; one patient's failure never stops the run."""
    res = Derived(as_of=as_of, data_cut=data_cut)
    for pid in source.patient_ids():
        try:
            patient = source.patient(pid)
            by_type = {t: source.resources(pid, t) for t in TYPES}
        except FhirError as exc:
            log.warning("Patient/%s: not read (%s)", pid, type(exc).__name__)
            res.failed.append({"patient_id": pid, "reason": str(exc)[:200]})
            continue
        out = derive_patient(patient, by_type, as_of, data_cut)
        for w in out.warnings:
            log.warning("%s", w)
        res.outcomes.append(out)
    return res


def labels_csv(d: Derived) -> str:
    """``labels.csv`` text: one row per patient with at least one known outcome."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LABEL_COLUMNS)
    for o in d.outcomes:
        if all(o.labels[k] is None for k in OUTCOMES):
            continue
        cell = {k: "" if o.labels[k] is None else str(o.labels[k]) for k in OUTCOMES}
        w.writerow(
            [
                o.patient_id,
                cell["death"],
                cell["cv_death"],
                o.cv_death_cause,
                cell["rehospitalization"],
                "" if o.rehosp_days is None else o.rehosp_days,
                cell["cardiology_rehospitalization"],
                cell["macce"],
                o.macce_cause,
                "",
            ]
        )
    return buf.getvalue()


def read_truth(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {row["patient_id"]: row for row in csv.DictReader(fh)}


def agreement(d: Derived, truth: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Per outcome: patients compared (not censored, in the truth), agreeing, share,
    and the disagreeing ids (at most 20)."""
    out: dict[str, Any] = {}
    for k in OUTCOMES:
        n = agree = 0
        wrong: list[str] = []
        for o in d.outcomes:
            row = truth.get(o.patient_id)
            if row is None or o.labels[k] is None:
                continue
            n += 1
            if str(o.labels[k]) == (row.get(k) or "").strip():
                agree += 1
            elif len(wrong) < 20:
                wrong.append(o.patient_id)
        out[k] = {
            "compared": n,
            "agree": agree,
            "agreement": round(agree / n, 4) if n else None,
            "censored": sum(o.labels[k] is None for o in d.outcomes),
            "disagree_ids": wrong,
        }
    return out


def report(d: Derived, truth: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The ``labels-report.json`` content."""
    rules: dict[str, int] = {}
    for o in d.outcomes:
        for r, n in o.rules.items():
            rules[r] = rules.get(r, 0) + n
    per_outcome = {
        k: {
            "events": sum(o.labels[k] == 1 for o in d.outcomes),
            "non_events": sum(o.labels[k] == 0 for o in d.outcomes),
            "censored": sum(o.labels[k] is None for o in d.outcomes),
        }
        for k in OUTCOMES
    }
    out: dict[str, Any] = {
        "as_of": d.as_of.isoformat(),
        "window_days": WINDOW_DAYS,
        "data_cut": d.data_cut.isoformat() if d.data_cut != dt.date.max else None,
        "patients": len(d.outcomes) + len(d.failed),
        "labelled": sum(any(o.labels[k] is not None for k in OUTCOMES) for o in d.outcomes),
        "outcomes": per_outcome,
        "rules": dict(sorted(rules.items())),
        "censored": [
            {
                "patient_id": o.patient_id,
                "followed_days": o.followed_days,
                "reason": o.censor_reason,
                "outcomes": [k for k in OUTCOMES if o.labels[k] is None],
            }
            for o in d.outcomes
            if o.censor_reason
        ],
        "failed": d.failed,
        "warnings": [w for o in d.outcomes for w in o.warnings],
    }
    if truth is not None:
        out["agreement"] = agreement(d, truth)
    return out


def write(
    d: Derived, labels_path: Path, truth: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """Write ``labels_path`` and ``labels-report.json`` beside it; return the report."""
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    labels_path.write_text(labels_csv(d), encoding="utf-8")
    rep = report(d, truth)
    (labels_path.parent / "labels-report.json").write_text(
        json.dumps(rep, indent=2) + "\n", encoding="utf-8"
    )
    return rep
