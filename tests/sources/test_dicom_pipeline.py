"""DICOM folder source, LGE series selection, slice order, pixels, and assemble()."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
from fhir.resources.R4B.patient import Patient

from cds.config import Settings
from cds.pipeline import assemble, dicom_patient_ids
from connectors.errors import DicomInvalid
from connectors.pacs.base import SeriesRef
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.pixels import resample_mask, resample_slice, series_volume, slice_pixels
from connectors.pacs.series import order_slices, select_lge_series
from tests.mapping.fhir_builders import patient, record
from tests.sources.dicom_builders import make_slice, write_series

INCLUDE = Settings().pacs.lge_patterns
EXCLUDE = Settings().pacs.exclude_patterns


def ref(desc: str, date: str = "20260101", n: int = 10, uid: str = "1.2.3", protocol: str = ""):
    return SeriesRef("M1", "1.2", uid, "MR", desc, protocol, date, n)


def test_selection_ignores_localizer_and_cine_and_picks_lge():
    refs = [
        ref("3-plane localizer", uid="1"),
        ref("cine SSFP SAX", uid="2"),
        ref("LGE PSIR SAX", uid="3"),
        ref("T1 map MOLLI", uid="4"),
        ref("tfl_loc", protocol="Survey", uid="5"),
    ]
    chosen = select_lge_series(refs, include=INCLUDE, exclude=EXCLUDE)
    assert chosen is not None and chosen.series_instance_uid == "3"
    # by ProtocolName only
    chosen = select_lge_series(
        [ref("series 7", protocol="Delayed enhancement SA", uid="7")],
        include=INCLUDE,
        exclude=EXCLUDE,
    )
    assert chosen is not None and chosen.series_instance_uid == "7"
    # an LGE localizer is still a localizer; cine only -> none
    assert (
        select_lge_series([ref("LGE localizer"), ref("cine")], include=INCLUDE, exclude=EXCLUDE)
        is None
    )


def test_selection_most_recent_study_not_after_as_of():
    refs = [
        ref("LGE SAX", date="20240301", uid="old"),
        ref("LGE SAX", date="20260301", uid="new"),
        ref("LGE SAX", date="20270101", uid="future"),
    ]
    pick = select_lge_series(refs, include=INCLUDE, exclude=EXCLUDE, as_of=dt.date(2026, 6, 1))
    assert pick is not None and pick.series_instance_uid == "new"
    pick = select_lge_series(
        refs, include=INCLUDE, exclude=EXCLUDE, as_of=dt.date(2026, 6, 1), max_age_days=30
    )
    assert pick is None
    # several LGE series in one study: the one with most instances
    pick = select_lge_series(
        [ref("LGE SAX", n=3, uid="a"), ref("LGE SAX", n=12, uid="b")],
        include=INCLUDE,
        exclude=EXCLUDE,
    )
    assert pick is not None and pick.series_instance_uid == "b"


def test_folder_scan_order_and_pixels(tmp_path):
    uid, expected = write_series(
        tmp_path, patient_id="M1", description="LGE PSIR SAX", n_slices=6, slope=2.0, intercept=-50
    )
    write_series(tmp_path, patient_id="M1", description="localizer", n_slices=3)
    write_series(tmp_path, patient_id="M2", description="LGE SAX", n_slices=4)
    (tmp_path / "README.txt").write_text("not dicom")
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 300)
    src = DicomFolderSource(tmp_path)
    refs = src.find_series("M1")
    assert sorted(r.series_description for r in refs) == ["LGE PSIR SAX", "localizer"]
    assert any("garbage.dcm" in w for w in src.warnings)
    assert not any("README" in w for w in src.warnings)
    lge = select_lge_series(refs, include=INCLUDE, exclude=EXCLUDE)
    assert lge is not None and lge.series_instance_uid == uid and lge.n_instances == 6
    datasets = src.retrieve_series(lge)
    ordered, how = order_slices(datasets)
    assert how == "position"
    assert [d.SOPInstanceUID for d in ordered] == [d.SOPInstanceUID for d in expected]
    # rescale: stored 100 + 10 k -> 2 * stored - 50
    assert slice_pixels(ordered[2])[0, 0] == pytest.approx(2 * 120 - 50)
    vol = series_volume(ordered, 16)
    assert vol.image.shape == (6, 16, 16) and vol.image.dtype == np.float32
    assert 0.0 <= vol.image.min() and vol.image.max() <= 1.0
    corners = vol.image[:, 0, 0]
    assert np.all(np.diff(corners) > 0)  # brightness rises with position
    assert vol.sop_instance_uids == tuple(d.SOPInstanceUID for d in expected)


def test_order_falls_back_to_instance_number(tmp_path):
    _, expected = write_series(tmp_path, patient_id="M1", description="LGE", with_position=False)
    src = DicomFolderSource(tmp_path)
    ordered, how = order_slices(src.retrieve_series(src.find_series("M1")[0]))
    assert how == "instance_number"
    # write_series numbers instances against the spatial order
    assert [d.SOPInstanceUID for d in ordered] == [d.SOPInstanceUID for d in reversed(expected)]


def test_fingerprint_is_stable_and_changes_with_pixels():
    a = make_slice(
        patient_id="M",
        study_uid="1.2",
        series_uid="1.2.3",
        description="LGE",
        pixels=np.arange(64, dtype=np.uint16).reshape(8, 8),
        position=(0, 0, 0),
    )
    b = make_slice(
        patient_id="M",
        study_uid="1.2",
        series_uid="1.2.3",
        description="LGE",
        pixels=np.arange(64, dtype=np.uint16).reshape(8, 8),
        position=(0, 0, 8),
    )
    f1 = series_volume([a, b], 8).fingerprint
    assert series_volume([a, b], 16).fingerprint == f1
    changed = np.arange(64, dtype=np.uint16).reshape(8, 8)
    changed[0, 0] = 999
    b.PixelData = changed.tobytes()
    assert series_volume([a, b], 8).fingerprint != f1


def test_bad_pixels_name_the_instance():
    ds = make_slice(
        patient_id="M",
        study_uid="1.2",
        series_uid="1.2.3",
        description="LGE",
        pixels=np.zeros((4, 4), dtype=np.uint16),
        position=(0, 0, 0),
    )
    del ds.PixelData
    with pytest.raises(DicomInvalid, match=ds.SOPInstanceUID):
        series_volume([ds], 8)


def test_resample_keeps_image_and_mask_registered():
    img = np.zeros((20, 30))
    img[5:10, 12:18] = 1.0
    mask = (img > 0).astype(np.uint8)[None] * 2
    out_img = resample_slice(img, 15)
    out_mask = resample_mask(mask, 15)[0]
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 2}
    # the mask's centre of mass sits on the image's
    yi, xi = np.argwhere(out_img > 0.5).mean(axis=0)
    ym, xm = np.argwhere(out_mask > 0).mean(axis=0)
    assert abs(yi - ym) < 1 and abs(xi - xm) < 1
    # non-square input is padded, not stretched: 20 rows of 30 -> 10 of 15
    rows = np.argwhere(resample_mask(np.ones((1, 20, 30), np.uint8), 15)[0].any(axis=1))
    assert 9 <= len(rows) <= 11


def test_dicom_patient_ids_prefer_mrn():
    p = Patient.model_validate(patient("p1", mrn="MRN-9"))
    assert dicom_patient_ids(p) == ["MRN-9", "p1"]
    assert dicom_patient_ids(p, "urn:example:mrn") == ["MRN-9"]
    assert dicom_patient_ids(Patient.model_validate(patient("p2"))) == ["p2"]


def test_assemble_end_to_end(tmp_path):
    uid, expected = write_series(
        tmp_path, patient_id="MRN-9", description="LGE PSIR SAX", study_date="20261001", n_slices=5
    )
    write_series(tmp_path, patient_id="MRN-9", description="cine SAX", study_date="20261002")
    rec = record(patient("p1", mrn="MRN-9"), [])
    rec.imaging_studies.append(
        __import__(
            "fhir.resources.R4B.imagingstudy", fromlist=["ImagingStudy"]
        ).ImagingStudy.model_validate(
            {
                "resourceType": "ImagingStudy",
                "id": "is-1",
                "status": "available",
                "subject": {"reference": "Patient/p1"},
                "series": [{"uid": uid, "modality": {"code": "MR"}}],
            }
        )
    )
    src = DicomFolderSource(tmp_path)
    m = assemble(rec, src, as_of=dt.date(2026, 11, 1), image_size=24, settings=Settings())
    assert m.lge_series is not None and m.lge_series.series_instance_uid == uid
    assert m.n_slices == 5 and m.slice_order == "position"
    assert m.model_input.image is not None and m.model_input.image.shape == (5, 24, 24)
    assert m.model_input.image_fingerprint
    assert m.sop_instance_uids == tuple(d.SOPInstanceUID for d in expected)
    assert "ImagingStudy/is-1" in m.basis
    # before the study: no image
    m = assemble(rec, src, as_of=dt.date(2026, 9, 1), image_size=24, settings=Settings())
    assert m.lge_series is None and m.model_input.image is None


def test_assemble_bad_series_gives_warning_not_crash(tmp_path):
    uid, _ = write_series(tmp_path, patient_id="p1", description="LGE SAX", n_slices=3)
    files = sorted((tmp_path).rglob("*.dcm"))
    src = DicomFolderSource(tmp_path)
    src.scan()
    files[1].write_bytes(b"garbage")  # broken after the header was indexed
    m = assemble(
        record(patient("p1"), []),
        src,
        as_of=dt.date(2026, 11, 1),
        image_size=8,
        settings=Settings(),
    )
    assert m.model_input.image is None
    assert any(uid in w for w in m.warnings)


def test_folder_index_cache_reuses_unchanged_files(tmp_path):
    uid, _ = write_series(tmp_path / "d", patient_id="M1", description="LGE", n_slices=3)
    cache = tmp_path / "cache" / "index.json"
    first = DicomFolderSource(tmp_path / "d", index_cache=cache)
    assert [r.n_instances for r in first.find_series("M1")] == [3]
    assert cache.is_file()
    files = sorted((tmp_path / "d").rglob("*.dcm"))
    # same size and mtime, different content: the cached header is trusted
    st = files[0].stat()
    files[0].write_bytes(b"\0" * st.st_size)
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns))
    again = DicomFolderSource(tmp_path / "d", index_cache=cache)
    assert [r.n_instances for r in again.find_series("M1")] == [3]
    # a changed file is read again (and now found broken); a new series appears
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    write_series(tmp_path / "d", patient_id="M2", description="LGE", n_slices=2)
    third = DicomFolderSource(tmp_path / "d", index_cache=cache)
    assert [r.n_instances for r in third.find_series("M1")] == [2]
    assert [r.n_instances for r in third.find_series("M2")] == [2]
    assert any(files[0].name in w for w in third.warnings)
    # an unreadable cache is ignored
    cache.write_text("{not json")
    assert [
        r.n_instances
        for r in DicomFolderSource(tmp_path / "d", index_cache=cache).find_series("M2")
    ] == [2]
