"""Write a whole synthetic cohort: FHIR NDJSON, DICOM series and the truth files.

Layout of ``out``::

    fhir/<ResourceType>.ndjson        FHIR R4, Bulk Data layout (one resource a line)
    dicom/<Study>/<Series>/NNN.dcm    LGE short-axis MR slices (+ ignorable extra series)
    truth/labels.csv                  1-year outcomes, causes, fibrosis burden
    truth/risk.csv                    true 1-year probabilities
    truth/masks/<Series>.npz          masks (S, H, W) uint8 + sop_instance_uids (S,)
    truth/modality_signal.json        AUROC of the true risk and per modality
    truth/implausible_values.csv      observations given deliberately implausible values
    truth/meta.json                   reference_date, seed, patients, images, image_size
                                      (the largest LGE matrix; + follow_up, data_cut,
                                      shifts when used)
    truth/follow_up.csv               with --follow-up: status, last day, death (followup.py)

The same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from cds.errors import UsageError
from cds.synth import outcomes
from cds.synth.cohort import HF_TYPES, NOTE_SIGNALS, Cohort, generate_cohort
from cds.synth.fhir import PatientWriter, Resource, StudyInfo, group
from cds.synth.followup import DATA_CUT_DAYS, FollowUp, FollowUpWriter, follow_up_rows
from cds.synth.medications import CATALOGUE, Prescription, dose_text, history
from cds.synth.notes import NoteContext, discharge_summary, followup_note
from cds.synth.shifts import Shifts
from cds.synth.visits import Visits, build_visits

RESOURCE_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "DocumentReference",
    "ImagingStudy",
    "Procedure",
    "Group",
)
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
HF_LABEL = {
    "hfref": "heart failure with reduced ejection fraction",
    "hfmref": "heart failure with mildly reduced ejection fraction",
    "hfpef": "heart failure with preserved ejection fraction",
}
COND_LABELS = {
    "hypertension": "hypertension", "diabetes": "type 2 diabetes", "atrial_fibrillation":
    "atrial fibrillation", "prior_mi": "previous myocardial infarction", "cad":
    "coronary artery disease", "ckd": "chronic kidney disease", "pulmonary_disease": "COPD",
    "cerebrovascular": "previous stroke",
}  # fmt: skip
NOTE_CONDITIONS = (
    "hypertension", "diabetes", "atrial_fibrillation", "prior_mi", "cad", "ckd",
    "pulmonary_disease", "cerebrovascular",
)  # fmt: skip


@dataclass
class SynthResult:
    """What :func:`generate` wrote.

    Args:
        out: the output folder.
        counts: resource type -> number of resources.
        n_dicom: number of DICOM files.
        signal: outcome -> AUROC figures (see :func:`cds.synth.outcomes.modality_signal`).
        prevalence: outcome -> fraction with the event.
    """

    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    n_dicom: int = 0
    signal: dict[str, dict[str, float]] = field(default_factory=dict)


def dumps(res: Resource) -> str:
    """One NDJSON line (compact, key order as built, UTF-8)."""
    return json.dumps(res, ensure_ascii=False, separators=(",", ":")) + "\n"


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        for sub in ("fhir", "dicom", "truth"):
            if (out / sub).exists():
                raise UsageError(
                    f"output folder {out} already holds '{sub}/'; choose an empty folder"
                )


def generate(
    n: int,
    seed: int,
    out: Path,
    *,
    images: bool = True,
    image_size: int = 256,
    n_slices: int = 10,
    reference_date: date = date(2026, 11, 1),
    progress: bool = True,
    follow_up: bool = False,
    shifts: Shifts | None = None,
) -> SynthResult:
    """Generate ``n`` patients from ``seed`` into ``out`` (see the module docstring).

    ``follow_up`` also writes the year after the reference date as an EHR holds it
    (:mod:`cds.synth.followup`); ``shifts`` change the case mix (:mod:`cds.synth.shifts`).
    """
    if n < 1:
        raise UsageError("--patients must be at least 1")
    if image_size < 32 or image_size > 1024:
        raise UsageError("--image-size must be between 32 and 1024")
    _check_out(out)
    sh = shifts or Shifts()
    c = generate_cohort(n, seed, reference_date, sh)
    vis = build_visits(c, seed)
    comp = outcomes.components(c)
    if sh.risk_female != 1.0:
        outcomes.scale_hazards(comp, ~c.male, sh.risk_female)
    hz = comp.hazards()
    risk = outcomes.probabilities(hz)
    labels = outcomes.sample(hz, seed)
    result = SynthResult(out=out, signal=outcomes.modality_signal(comp, labels))

    (out / "fhir").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    writer = PatientWriter(
        c, vis, {"nt_probnp": sh.assay_nt_probnp} if sh.assay_nt_probnp != 1.0 else None
    )
    fu_writer = FollowUpWriter(c, labels, seed) if follow_up else None
    fu_rows: list[tuple[str, FollowUp]] = []
    files: dict[str, IO[str]] = {}
    counts = dict.fromkeys(RESOURCE_TYPES, 0)
    implausible: list[tuple[str, str, str, float, str]] = []
    burden_out: list[str] = []
    write_study: Any = None
    if images:
        from cds.synth import dicom  # noqa: PLC0415 - pydicom work only when asked for

        write_study = dicom.write_study

    def emit(resources: list[Resource]) -> None:
        for r in resources:
            rt = r["resourceType"]
            if rt not in files:
                files[rt] = open(out / "fhir" / f"{rt}.ndjson", "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            files[rt].write(dumps(r))
            counts[rt] += 1

    try:
        for i in tqdm(range(n), desc="synth", unit="patient", disable=not progress):
            rng = np.random.default_rng([seed, i, 0x4E07E5])
            rx = _prescriptions(c, vis, i, rng)
            fu = fu_writer.patient(i) if fu_writer is not None else None
            patient = writer.patient(i)
            if fu is not None:
                if fu.deceased:
                    patient["deceasedDateTime"] = fu.deceased
                fu_rows.append((c.patient_ids[i], fu))
            emit([patient])
            emit(writer.encounters(i))
            emit(writer.conditions_for(i, rng))
            obs, bad = writer.observations(i)
            emit(obs)
            implausible += [(c.patient_ids[i], *b) for b in bad]
            emit(writer.medication_requests(i, rx))
            emit(_documents(writer, c, vis, i, rx, rng))
            b = ""
            if c.has_study[i]:
                b = f"{c.burden[i]:.4f}"
                if write_study is not None:
                    study: StudyInfo = write_study(c, vis, i, out, image_size, n_slices)
                    result.n_dicom += sum(len(s.sop_uids) for s in study.series)
                    emit([writer.imaging_study(i, study)])
            burden_out.append(b)
            if fu is not None:
                emit(fu.resources)
        emit([group(c)])
    finally:
        for fh in files.values():
            fh.close()
    result.counts = {k: v for k, v in counts.items() if v}
    meta: dict[str, Any] = {
        "generator": "mprtm synth",
        "reference_date": reference_date.isoformat(),
        "seed": seed,
        "patients": n,
        "images": images,
        "image_size": image_size if images else None,
        "slices": n_slices if images else None,
    }
    if follow_up:
        meta["follow_up"] = True
        meta["data_cut"] = (reference_date + timedelta(days=DATA_CUT_DAYS)).isoformat()
    if sh.any:
        meta["shifts"] = sh.as_dict()
    (out / "truth" / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _write_truth(out / "truth", c, labels, risk, burden_out, implausible, result.signal)
    if fu_rows:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["patient_id", "status", "last_day", "deceased"])
        w.writerows(follow_up_rows(fu_rows))
        (out / "truth" / "follow_up.csv").write_text(buf.getvalue(), encoding="utf-8")
    return result


def _prescriptions(c: Cohort, vis: Visits, i: int, rng: np.random.Generator) -> list[Prescription]:
    active = {k: bool(v[i]) for k, v in c.drug_classes.items()}
    extra = {
        "diabetes": bool(c.conditions["diabetes"][i]) and rng.random() < 0.55,
        "always": rng.random() < 0.25,
        "uric": c.values["uric_acid"][i] > 520 and rng.random() < 0.5,
    }
    warfarin = bool(c.values["inr"][i] > 1.7)
    return history(rng, active, int(vis.n_visits[i]), extra, warfarin)


def _documents(
    writer: PatientWriter,
    c: Cohort,
    vis: Visits,
    i: int,
    rx: list[Prescription],
    rng: np.random.Generator,
) -> list[Resource]:
    hf = HF_TYPES[int(c.hf_type[i])]
    ctx = NoteContext(
        male=bool(c.male[i]),
        age=float(c.age[i]),
        hf_label=HF_LABEL[hf],
        comorbidities=[COND_LABELS[n] for n in NOTE_CONDITIONS if c.conditions[n][i]],
        signals={s: bool(c.signals[s][i]) for s in NOTE_SIGNALS},
        drugs=[p.drug.name for p in rx if p.drug_class],
    )
    names = [s.name for s in vis.specs]
    ef_col = names.index("lvef")
    ef = float(vis.value[i, 0, ef_col])
    if ef > 85:
        ef = float(c.values["lvef"][i])
    meds = [
        dose_text(p.drug, p.dose).split(":")[0] + f" {p.drug.frequency}" for p in rx if p.visit == 0
    ]
    docs = [
        writer.document(i, 0, discharge_summary(rng, ctx, ef, int(c.length_of_stay[i]), meds), True)
    ]
    n_vis = int(vis.n_visits[i])
    for k in range(1, n_vis):
        vit = {
            nm: float(vis.value[i, k, j])
            for j, nm in enumerate(names)
            if nm in ("sbp", "dbp", "heart_rate", "weight")
            and vis.measured[i, k, j]
            and not vis.implausible[i, k, j]
        }
        if rng.random() < 0.85 or k == n_vis - 1:
            docs.append(
                writer.document(i, k, followup_note(rng, ctx, k, k == n_vis - 1, vit), False)
            )
    return docs


def _write_truth(
    truth: Path,
    c: Cohort,
    labels: outcomes.Labels,
    risk: dict[str, np.ndarray],
    burden: list[str],
    implausible: list[tuple[str, str, str, float, str]],
    signal: dict[str, dict[str, float]],
) -> None:
    def write_csv(name: str, header: tuple[str, ...] | list[str], rows: list[list[Any]]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        (truth / name).write_text(buf.getvalue(), encoding="utf-8")

    rows = []
    for i, pid in enumerate(c.patient_ids):
        rows.append(
            [
                pid,
                int(labels.death[i]),
                int(labels.cv_death[i]),
                labels.cv_death_cause[i],
                int(labels.rehospitalization[i]),
                int(labels.rehosp_days[i]) if labels.rehosp_days[i] >= 0 else "",
                int(labels.cardiology_rehospitalization[i]),
                int(labels.macce[i]),
                labels.macce_cause[i],
                burden[i],
            ]
        )
    write_csv("labels.csv", LABEL_COLUMNS, rows)
    write_csv(
        "risk.csv",
        ["patient_id", *outcomes.OUTCOMES],
        [
            [pid, *(f"{risk[o][i]:.6f}" for o in outcomes.OUTCOMES)]
            for i, pid in enumerate(c.patient_ids)
        ],
    )
    write_csv(
        "implausible_values.csv",
        ["patient_id", "observation_id", "feature", "value", "unit"],
        [list(r) for r in implausible],
    )
    (truth / "modality_signal.json").write_text(
        json.dumps(signal, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


__all__ = ["CATALOGUE", "LABEL_COLUMNS", "RESOURCE_TYPES", "SynthResult", "generate"]
