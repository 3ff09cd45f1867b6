"""The imaging side: readable MR DICOM, geometry, UIDs matching FHIR, masks matching labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
from synth_helpers import SIZE, read_ndjson

from cds.config import PacsSettings

REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
    "StudyDate", "Modality", "SeriesDescription", "ProtocolName", "SeriesNumber",
    "InstanceNumber", "PixelSpacing", "SliceThickness", "ImagePositionPatient",
    "ImageOrientationPatient", "FrameOfReferenceUID", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
    "PhotometricInterpretation", "SamplesPerPixel", "ScanningSequence", "SequenceVariant",
    "ImageType",
)  # fmt: skip


def _lge(cohort_dir: Path, study: dict) -> dict:
    """The LGE series of a study: the one with a ground-truth mask."""
    (lge,) = [
        s for s in study["series"] if (cohort_dir / "truth" / "masks" / f"{s['uid']}.npz").exists()
    ]
    desc = lge["description"].lower()
    assert any(p.lower() in desc for p in PacsSettings().lge_patterns), desc
    return lge


def _studies(cohort_dir: Path) -> list[dict]:
    return list(read_ndjson(cohort_dir / "fhir" / "ImagingStudy.ndjson"))


def test_every_dicom_file_reads_with_the_mr_attributes(cohort_dir: Path) -> None:
    files = sorted((cohort_dir / "dicom").rglob("*.dcm"))
    assert len(files) > 100
    mrns = {
        p["identifier"][0]["value"] for p in read_ndjson(cohort_dir / "fhir" / "Patient.ndjson")
    }
    for f in files:
        ds = pydicom.dcmread(f)
        for kw in REQUIRED:
            assert kw in ds, f"{f.name}: {kw} missing"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.Modality == "MR" and ds.PatientID in mrns
        assert 12 <= ds.BitsStored <= 16 and ds.BitsAllocated == 16
        assert ds.pixel_array.shape == (SIZE, SIZE)
        assert f.parent.name == ds.SeriesInstanceUID and f.parent.parent.name == ds.StudyInstanceUID


def test_imaging_study_uids_match_the_files(cohort_dir: Path) -> None:
    studies = _studies(cohort_dir)
    assert studies
    n_extra = 0
    for st in studies:
        study_uid = st["identifier"][0]["value"].removeprefix("urn:oid:")
        for se in st["series"]:
            folder = cohort_dir / "dicom" / study_uid / se["uid"]
            uids = [
                pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                for f in sorted(folder.glob("*.dcm"))
            ]
            assert uids == [i["uid"] for i in se["instance"]]
            n_extra += not (cohort_dir / "truth" / "masks" / f"{se['uid']}.npz").exists()
    assert n_extra >= 1, "some studies carry a localizer or cine series"


def test_slices_are_stacked_along_the_normal(cohort_dir: Path) -> None:
    st = _studies(cohort_dir)[0]
    study_uid = st["identifier"][0]["value"].removeprefix("urn:oid:")
    lge = _lge(cohort_dir, st)
    dss = [
        pydicom.dcmread(f)
        for f in sorted((cohort_dir / "dicom" / study_uid / lge["uid"]).glob("*.dcm"))
    ]
    iop = np.array(dss[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    assert abs(np.linalg.norm(normal) - 1) < 1e-4
    pos = np.array([d.ImagePositionPatient for d in dss], float)
    steps = np.diff(pos, axis=0)
    along = steps @ normal
    assert np.allclose(along, float(dss[0].SpacingBetweenSlices), atol=1e-2)
    assert np.allclose(steps - along[:, None] * normal, 0, atol=1e-2)


def test_masks_align_with_dicom_and_labels(cohort_dir: Path) -> None:
    labels = {
        r["patient_id"]: r
        for r in csv.DictReader((cohort_dir / "truth" / "labels.csv").read_text().splitlines())
    }
    checked = psir_checked = 0
    for st in _studies(cohort_dir):
        pid = st["subject"]["reference"].split("/")[1]
        study_uid = st["identifier"][0]["value"].removeprefix("urn:oid:")
        lge = _lge(cohort_dir, st)
        with np.load(cohort_dir / "truth" / "masks" / f"{lge['uid']}.npz") as z:
            masks, sops = z["masks"], list(z["sop_instance_uids"])
        assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1, 2}
        assert sops == [i["uid"] for i in lge["instance"]]
        burden = (masks == 2).sum() / (masks >= 1).sum()
        assert abs(burden - float(labels[pid]["fibrosis_burden"])) < 0.01
        dss = [
            pydicom.dcmread(f)
            for f in sorted((cohort_dir / "dicom" / study_uid / lge["uid"]).glob("*.dcm"))
        ]
        assert masks.shape == (len(dss), dss[0].Rows, dss[0].Columns)
        if burden > 0.05 and "PSIR" in dss[0].ImageType:
            # phase-sensitive: enhancement (short T1) is brighter than the nulled myocardium
            px = np.stack([d.pixel_array for d in dss]).astype(float)
            lo, hi = np.percentile(px, [1, 99])
            assert px[masks == 2].mean() > px[masks == 1].mean() + 0.1 * (hi - lo)
            psir_checked += 1
        checked += 1
    assert psir_checked >= 1
    no_study = [r for r in labels.values() if r["fibrosis_burden"] == ""]
    assert checked + len(no_study) == len(labels)
