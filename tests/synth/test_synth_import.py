"""``mprtm import-csv``: the seed study's CSV format into FHIR NDJSON and labels."""

from __future__ import annotations

import csv
import importlib
import io
from pathlib import Path

import pytest
from synth_helpers import read_ndjson

from cds.cli import main
from cds.clinical_tables import condition_specs, feature_specs
from cds.synth.generate import LABEL_COLUMNS
from cds.synth.seed_import import SeedImportError, import_seed_csv, split_medications

SEED_CSV = Path("/work/shared/seed/data_example.csv")
MEDS = (
    "ACEI usage dosage:  0. ARB usage dosage: Valsartan 80 mg qd. RAAS usage dosage: 1.0. "
    "from Metoprolol succinate 23.75 mg qd*3d to 47.5 mg qd. Diuretics usage dosage: 0. "
    "Other Medications usage dosage: Ivabradine 5 mg bid, trimetazidine 35 mg bid "
)
OUTCOMES = ("Death", "Cardiovascular Death", "Cause of Cardiovascular Death", "Rehospitalization",
            "Cardiology Rehospitalization", "MACCES Event", "MACCES Cause")  # fmt: skip


def _seed_like_csv(path: Path, n: int) -> None:
    """A file in the seed format built from the clinical tables (no seed data copied)."""
    feats = [s for s in feature_specs() if s.seed_column]
    conds = [c.seed_column for c in condition_specs() if c.seed_column]
    header = ["ID", "CMR_ID", "Gender", "Age", *conds, "medical_indicator"]
    header += [s.seed_column for s in feats] + ["Myocardial Fibrosis Area", *OUTCOMES]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for i in range(1, n + 1):
        row = [str(i), str(100 + i), str(i % 2), str(40 + i)] + [
            "1" if (i + j) % 3 == 0 else "0" for j in range(len(conds))
        ]
        row.append(MEDS)
        row += [f"{(s.min + s.max) / 2 / s.seed_factor:g}" if i % 4 else "nan" for s in feats]
        row += [f"{0.05 * i:g}", "1" if i == 2 else "0", "0", "0", "1", "0", "0", "0"]
        w.writerow(row)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    rows[row - 1][column] = value
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


@pytest.mark.skipif(not SEED_CSV.is_file(), reason="the seed sample file is not on this machine")
def test_the_seed_sample_gives_ten_patients(tmp_path: Path) -> None:
    assert main(["import-csv", str(SEED_CSV), "--out", str(tmp_path)]) == 0
    patients = list(read_ndjson(tmp_path / "fhir" / "Patient.ndjson"))
    assert len(patients) == 10
    labels = list(csv.DictReader((tmp_path / "truth" / "labels.csv").read_text().splitlines()))
    assert len(labels) == 10 and list(labels[0]) == list(LABEL_COLUMNS)
    lvdd = [
        o
        for o in read_ndjson(tmp_path / "fhir" / "Observation.ndjson")
        if o["id"] == "seed-1-obs-lvdd"
    ]
    assert lvdd[0]["valueQuantity"] == {  # 6.53 cm in the seed file
        "value": 65.3, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"
    }  # fmt: skip


def test_import_writes_valid_r4_with_converted_units(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    _seed_like_csv(src, 6)
    res = import_seed_csv(src, tmp_path / "out")
    assert res.patients == 6 and not res.errors
    for f in sorted((tmp_path / "out" / "fhir").glob("*.ndjson")):
        cls = getattr(importlib.import_module(f"fhir.resources.R4B.{f.stem.lower()}"), f.stem)
        for line in f.read_text().splitlines():
            cls.model_validate_json(line)
    meds = [
        m
        for m in read_ndjson(tmp_path / "out" / "fhir" / "MedicationStatement.ndjson")
        if m["id"].startswith("seed-1-")
    ]
    texts = [m["medicationCodeableConcept"]["text"] for m in meds]
    assert texts == ["Valsartan 80 mg qd", "from Metoprolol succinate 23.75 mg qd*3d to 47.5 mg qd",
                     "Ivabradine 5 mg bid", "trimetazidine 35 mg bid"]  # fmt: skip
    obs = {
        o["code"]["coding"][0]["code"]: o
        for o in read_ndjson(tmp_path / "out" / "fhir" / "Observation.ndjson")
        if o["id"].startswith("seed-1-")
    }
    for spec in feature_specs():
        if spec.seed_column:
            assert obs[spec.loinc]["valueQuantity"]["code"] == spec.unit
            assert obs[spec.loinc]["valueQuantity"]["value"] == pytest.approx(
                (spec.min + spec.max) / 2, rel=1e-4
            )
    (group,) = read_ndjson(tmp_path / "out" / "fhir" / "Group.ndjson")
    assert len(group["member"]) == 6


def test_a_bad_cell_names_row_and_column_and_the_rest_imports(tmp_path: Path, capsys) -> None:
    src = tmp_path / "in.csv"
    _seed_like_csv(src, 5)
    _set_cell(src, 3, "Creatinine", "12,5 umol")
    _set_cell(src, 5, "Death", "7")
    out = tmp_path / "out"
    assert main(["import-csv", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "row 3, column 'Creatinine': not a number" in err
    assert "row 5, column 'Death': expected 0 or 1" in err
    assert "12,5" not in err  # cell contents are never echoed
    ids = [p["id"] for p in read_ndjson(out / "fhir" / "Patient.ndjson")]
    assert ids == ["seed-1", "seed-2", "seed-4"]
    errors = list(csv.DictReader((out / "import-errors.csv").read_text().splitlines()))
    assert [(e["row"], e["column"]) for e in errors] == [("3", "Creatinine"), ("5", "Death")]


def test_a_file_that_is_not_the_seed_format_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "other.csv"
    src.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(SeedImportError, match="ID"):
        import_seed_csv(src, tmp_path / "out")


def test_split_medications_drops_empty_classes() -> None:
    text = "ACEI usage dosage: 0. ARNI usage dosage: Sacubitril/valsartan 50 mg bid. "
    text += "RAAS usage dosage: 1.0."
    assert split_medications(text) == ["Sacubitril/valsartan 50 mg bid"]
