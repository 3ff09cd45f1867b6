"""load_dataset on a synthetic cohort and on a small hand-built folder with masks."""

from __future__ import annotations

import csv
import datetime as dt
import json

import numpy as np
import pytest

from cds.config import Settings
from cds.dataset import load_dataset
from cds.errors import UsageError
from cds.synth.generate import generate
from model.types import OUTCOMES
from tests.mapping.fhir_builders import obs, patient, write_ndjson
from tests.sources.dicom_builders import write_series


def _settings(tmp_path):
    return Settings().replace(pacs__cache_dir=str(tmp_path / "cache"))


def test_load_synthetic_cohort(tmp_path):
    out = tmp_path / "cohort"
    generate(12, 3, out, images=False, progress=False)
    examples = load_dataset(out, progress=False, settings=_settings(tmp_path))
    with (out / "truth" / "labels.csv").open() as fh:
        labels = {r["patient_id"]: r for r in csv.DictReader(fh)}
    assert [e.patient_id for e in examples] == list(labels)
    for e in examples:
        row = labels[e.patient_id]
        assert {o: e.labels[o] for o in OUTCOMES} == {o: int(row[o]) for o in OUTCOMES}
        assert e.labels["macce_cause"] == row["macce_cause"]
        assert e.true_risk is not None and set(e.true_risk) == set(OUTCOMES)
        assert e.model_input.image is None and e.masks is None
        assert e.model_input.numeric["age"] > 0
        assert e.model_input.text
        burden = row["fibrosis_burden"]
        assert e.fibrosis_burden == (float(burden) if burden else None)
    # the deliberately implausible values were dropped, with the Observation named
    with (out / "truth" / "implausible_values.csv").open() as fh:
        bad = list(csv.DictReader(fh))
    by_id = {e.patient_id: e for e in examples}
    for row in bad:
        e = by_id[row["patient_id"]]
        assert any(row["observation_id"] in w for w in e.warnings)


def test_masks_follow_slice_order_and_size(tmp_path):
    root = tmp_path / "c"
    write_ndjson(
        root / "fhir",
        [
            patient("p1", mrn="M1"),
            patient("p2"),
            obs("o1", "p1", "2160-0", 1, "mg/dL", "2026-10-01"),
        ],
    )
    uid, ordered = write_series(
        root / "dicom", patient_id="M1", description="LGE", n_slices=4, shape=(20, 20)
    )
    (root / "truth" / "masks").mkdir(parents=True)
    (root / "truth" / "labels.csv").write_text(
        "patient_id,death,cv_death,cv_death_cause,rehospitalization,"
        "cardiology_rehospitalization,macce,macce_cause,fibrosis_burden\n"
        "p1,1,1,heart failure,0,0,1,heart failure,0.2\n"
        "p2,0,0,,0,0,0,,\n"
    )
    (root / "truth" / "meta.json").write_text(json.dumps({"reference_date": "2026-11-01"}))
    # masks stored in reverse slice order: slice k has label value k % 3 everywhere
    uids = [d.SOPInstanceUID for d in ordered][::-1]
    masks = np.stack([np.full((20, 20), k % 3, np.uint8) for k in range(4)])[::-1]
    np.savez(root / "truth" / "masks" / f"{uid}.npz", masks=masks, sop_instance_uids=np.array(uids))
    settings = _settings(tmp_path)
    ex = {
        e.patient_id: e
        for e in load_dataset(root, image_size=10, progress=False, settings=settings)
    }
    e = ex["p1"]
    assert e.model_input.image is not None and e.model_input.image.shape == (4, 10, 10)
    assert e.masks is not None and e.masks.shape == (4, 10, 10) and e.masks.dtype == np.uint8
    assert [int(m[0, 0]) for m in e.masks] == [0, 1, 2, 0]
    assert e.labels["cv_death_cause"] == "heart failure" and e.fibrosis_burden == 0.2
    assert e.true_risk is None
    assert ex["p2"].model_input.image is None and ex["p2"].fibrosis_burden is None
    # without images
    plain = load_dataset(root, with_images=False, progress=False, settings=settings)
    e = {x.patient_id: x for x in plain}["p1"]
    assert e.model_input.image is None and e.masks is None
    assert e.model_input.numeric["creatinine"] == pytest.approx(88.42)


def test_bad_labels_and_missing_folders(tmp_path):
    with pytest.raises(UsageError, match="fhir"):
        load_dataset(tmp_path, progress=False)
    write_ndjson(tmp_path / "fhir", [patient("p1")])
    with pytest.raises(UsageError, match="labels.csv"):
        load_dataset(tmp_path, progress=False)
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "labels.csv").write_text(
        "patient_id,death,cv_death,rehospitalization,cardiology_rehospitalization,macce\n"
        "p1,1,yes,0,0,0\n"
    )
    with pytest.raises(UsageError, match="cv_death"):
        load_dataset(tmp_path, as_of=dt.date(2026, 1, 1), progress=False)


def test_loader_processes_give_the_same_examples_in_the_same_order(tmp_path, monkeypatch):
    import cds.dataset

    out = tmp_path / "cohort"
    generate(14, 5, out, progress=False)
    settings = _settings(tmp_path)
    serial = load_dataset(out, image_size=16, progress=False, settings=settings)
    monkeypatch.setattr(cds.dataset, "_CHUNK", 3)  # 5 chunks over 2 spawned processes
    monkeypatch.setattr(cds.dataset, "_PER_WORKER_MIN", 5)
    parallel = load_dataset(out, image_size=16, progress=False, settings=settings, workers=2)
    assert [e.patient_id for e in parallel] == [e.patient_id for e in serial]
    assert sum(e.model_input.image is not None for e in serial) >= 5
    for a, b in zip(serial, parallel, strict=True):
        assert a.labels == b.labels and a.true_risk == b.true_risk
        assert a.model_input.numeric == b.model_input.numeric
        assert a.model_input.text == b.model_input.text
        assert (a.model_input.image is None) == (b.model_input.image is None)
        if a.model_input.image is not None:
            assert b.model_input.image is not None
            assert np.array_equal(a.model_input.image, b.model_input.image)
        assert (a.masks is None) == (b.masks is None)
        if a.masks is not None:
            assert np.array_equal(a.masks, b.masks)
    with pytest.raises(UsageError, match="workers"):
        load_dataset(out, progress=False, settings=settings, workers=0)
