"""The seed study's sample CSV, imported as FHIR, maps back to its own values."""

from __future__ import annotations

import csv
import datetime as dt
import math
from pathlib import Path

import pytest

from cds.clinical_tables import condition_specs, feature_specs
from cds.mapping import map_record
from cds.synth.seed_import import import_seed_csv
from connectors.fhir.ndjson import NdjsonFolderSource

SEED = Path("/work/shared/seed/data_example.csv")


@pytest.mark.skipif(not SEED.is_file(), reason="the seed study's sample file is not here")
def test_seed_csv_values_survive_import_and_mapping(tmp_path):
    import_seed_csv(SEED, tmp_path / "out")
    rows = list(csv.DictReader(SEED.read_text(encoding="utf-8").splitlines()))
    with NdjsonFolderSource(tmp_path / "out" / "fhir") as src:
        ids = src.cohort_patient_ids("all")
        assert len(ids) == len(rows)
        mapped = [map_record(src.patient_record(p), as_of=dt.date(2026, 11, 1)) for p in ids]
    checked = 0
    for m, row in zip(mapped, rows, strict=True):
        n = m.model_input.numeric
        for f in feature_specs():
            raw = row.get(f.seed_column) if f.seed_column else None
            if raw is None or math.isnan(float(raw)):
                assert f.seed_column == "" or f.name not in n
                continue
            expected = float(raw) * f.seed_factor
            if f.min <= expected <= f.max:
                assert n[f.name] == pytest.approx(expected, rel=1e-9), (m.patient_id, f.name)
                checked += 1
            else:
                assert f.name not in n and any(f.name in w for w in m.warnings)
        for c in condition_specs():
            if c.seed_column and row.get(c.seed_column) in ("0", "1"):
                assert n[f"cond_{c.name}"] == float(row[c.seed_column]), (m.patient_id, c.name)
        assert m.model_input.text and "Medications:" in m.model_input.text
    assert checked > 400
