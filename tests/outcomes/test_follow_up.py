"""``mprtm synth --follow-up`` -> ``mprtm outcomes`` agrees with the simulator's truth;
case-mix shifts; features as of the index date whatever the folder holds after it."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from cds.cli import main
from cds.dataset import load_dataset
from cds.errors import UsageError
from cds.synth.generate import generate
from cds.synth.shifts import parse_shifts
from model.types import OUTCOMES

AS_OF = "2026-11-01"


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fu") / "c"
    generate(250, 5, out, images=False, progress=False, follow_up=True)
    return out


def test_derived_labels_agree_with_truth(cohort: Path, capsys: pytest.CaptureFixture) -> None:
    labels = cohort / "derived" / "labels.csv"
    rc = main(
        [
            "outcomes",
            "--as-of",
            AS_OF,
            "--ndjson",
            str(cohort / "fhir"),
            "--out",
            str(labels),
            "--truth",
            str(cohort / "truth" / "labels.csv"),
        ]
    )
    assert rc == 0
    rep = json.loads((labels.parent / "labels-report.json").read_text())
    status = {r["patient_id"]: r["status"] for r in rows_of(cohort / "truth" / "follow_up.csv")}
    for o in OUTCOMES:
        a = rep["agreement"][o]
        assert a["agreement"] >= 0.99, (o, a)
        assert a["compared"] >= 200
    censored = {c["patient_id"] for c in rep["censored"]}
    assert censored  # loss to follow-up and unfinished years exist ...
    assert all(status[p] in ("lost", "unfinished") for p in censored)  # ... and only they
    assert rep["rules"]["excluded: planned: elective priority"] > 0
    assert rep["rules"]["merged: transfer continues an earlier stay"] > 0
    rows = rows_of(labels)
    assert all(r[o] in ("", "0", "1") for r in rows for o in OUTCOMES)
    assert any(r["death"] == "" for r in rows)  # censored outcomes are empty, never 0


def test_shifts_change_the_case_mix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_shifts(["sex=2"])
    base = tmp_path / "base"
    site = tmp_path / "site"
    generate(300, 7, base, images=False, progress=False)
    generate(
        300,
        7,
        site,
        images=False,
        progress=False,
        shifts=parse_shifts(["age=+10", "hfpef=0.6", "lge=0.2", "assay.nt_probnp=1.3"]),
    )

    def ages(folder: Path) -> np.ndarray:
        rows = lines_of(folder / "fhir" / "Patient.ndjson")
        return np.array([2026 - int(r["birthDate"][:4]) for r in rows], float)

    assert 8 < ages(site).mean() - ages(base).mean() < 12
    burden = [r["fibrosis_burden"] for r in rows_of(site / "truth" / "labels.csv")]
    assert 0.12 < sum(b != "" for b in burden) / len(burden) < 0.28
    meta = json.loads((site / "truth" / "meta.json").read_text())
    assert meta["shifts"]["assay.nt_probnp"] == 1.3

    def nt(folder: Path) -> float:
        vals = lines_of(folder / "fhir" / "Observation.ndjson")
        return float(
            np.median(
                [
                    v["valueQuantity"]["value"]
                    for v in vals
                    if v["code"]["coding"][0]["code"] == "33762-6"
                ]
            )
        )

    assert nt(site) > 1.2 * nt(base)


def test_inputs_ignore_everything_after_the_as_of_date(cohort: Path, tmp_path: Path) -> None:
    """A post-index NT-proBNP and a death-revealing note change no input."""
    labels = cohort / "derived" / "labels.csv"
    if not labels.exists():
        main(["outcomes", "--as-of", AS_OF, "--ndjson", str(cohort / "fhir"), "--out", str(labels)])
    as_of = dt.date.fromisoformat(AS_OF)
    before = load_dataset(
        cohort, as_of=as_of, with_images=False, progress=False, labels_file=labels
    )
    pid = before[0].patient_id
    leak = tmp_path / "leak"
    (leak / "fhir").mkdir(parents=True)
    for f in (cohort / "fhir").iterdir():
        (leak / "fhir" / f.name).write_bytes(f.read_bytes())
    import base64

    note = base64.b64encode(b"Patient died at home; palliative care, worsening dyspnoea.").decode()
    with (leak / "fhir" / "Observation.ndjson").open("a") as fh:
        fh.write(
            json.dumps(
                {
                    "resourceType": "Observation",
                    "id": "leak-nt",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "33762-6"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": "2026-11-02T08:00:00Z",
                    "valueQuantity": {
                        "value": 55000,
                        "unit": "pg/mL",
                        "system": "http://unitsofmeasure.org",
                        "code": "pg/mL",
                    },
                }
            )
            + "\n"
        )
    with (leak / "fhir" / "DocumentReference.ndjson").open("a") as fh:
        fh.write(
            json.dumps(
                {
                    "resourceType": "DocumentReference",
                    "id": "leak-doc",
                    "status": "current",
                    "subject": {"reference": f"Patient/{pid}"},
                    "date": "2026-11-03T10:00:00Z",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "11506-3"}]},
                    "content": [{"attachment": {"contentType": "text/plain", "data": note}}],
                }
            )
            + "\n"
        )
    after = load_dataset(leak, as_of=as_of, with_images=False, progress=False, labels_file=labels)
    assert [e.patient_id for e in after] == [e.patient_id for e in before]
    assert after[0].model_input.numeric == before[0].model_input.numeric
    assert after[0].model_input.text == before[0].model_input.text
    # the same resources dated before the index date do change the inputs (the test can fail)
    later = load_dataset(
        leak, as_of=dt.date(2026, 11, 4), with_images=False, progress=False, labels_file=labels
    )
    assert later[0].model_input.numeric.get("nt_probnp") == 55000
    assert "palliative" in (later[0].model_input.text or "")
