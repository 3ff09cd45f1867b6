"""The Sunnybrook subset loader: shapes, spacing, masks between the contours, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cds.errors import ValidationDataError
from cds.realdata.sunnybrook import DEFAULT_DIR, load_sunnybrook, polygon_mask, read_contour

PATIENTS = ("SCD0000101", "SCD0000201", "SCD0000301", "SCD0000401", "SCD0000501")


def _write_dicom(path: Path, pixels: np.ndarray, number: int, spacing: float) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _square(lo: float, hi: float) -> str:
    corners = [(lo, lo), (hi, lo), (hi, hi), (lo, hi)]
    return "".join(f"{x:.2f} {y:.2f}\n" for x, y in corners)


@pytest.fixture
def hand_built(tmp_path: Path) -> Path:
    """One patient, one 32 x 48 slice (rows x columns): a wide rectangle as epicardium
    (columns 8..35, rows 8..23) and a square endocardium (columns 12..19, rows 12..19)."""
    folder = tmp_path / "P1"
    folder.mkdir()
    pixels = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48)
    _write_dicom(folder / "IM-0001-0007.dcm", pixels, 7, 0.8)
    epi = "7.5 7.5\n35.5 7.5\n35.5 23.5\n7.5 23.5\n"  # x (columns) wider than y (rows)
    (folder / "IM-0001-0007-ocontour-manual.txt").write_text(epi)
    (folder / "IM-0001-0007-icontour-manual.txt").write_text(_square(11.5, 19.5))
    return tmp_path


def test_shipped_subset_shapes_and_spacing() -> None:
    data = load_sunnybrook(64)
    assert data.images.shape == data.masks.shape == (30, 64, 64)
    assert data.images.dtype == np.float32 and data.masks.dtype == np.uint8
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.patients == tuple(p for p in PATIENTS for _ in range(6))
    assert data.slice_ids[:2] == ("IM-0001-0059", "IM-0001-0099")
    assert "not LGE" in data.name and "cine" in data.description
    # 256 px at PixelSpacing 1.367188 (1.2891 for SCD0000301), resampled to 64 px
    assert data.spacing_mm[0] == pytest.approx(1.367188 * 4)
    assert data.spacing_mm[12] == pytest.approx(1.2891 * 4)
    per_slice = data.masks.reshape(30, -1).sum(1)
    assert (per_slice > 10).all()  # every slice has a ring at 64 px


def test_shipped_masks_lie_between_the_contours_on_the_image() -> None:
    """At the native 256 px: every myocardium pixel is inside the epicardial and outside
    the endocardial contour, and on these bright-blood images the cavity is brighter
    than the myocardium (the contours are registered with the pixels)."""
    data = load_sunnybrook(256)
    for k, (patient, sid) in enumerate(zip(data.patients, data.slice_ids, strict=True)):
        stem = DEFAULT_DIR / patient / sid
        epi = polygon_mask(read_contour(Path(f"{stem}-ocontour-manual.txt")), (256, 256))
        endo = polygon_mask(read_contour(Path(f"{stem}-icontour-manual.txt")), (256, 256))
        mask = data.masks[k].astype(bool)
        assert np.array_equal(mask, epi & ~endo), sid
        assert data.images[k][endo].mean() > data.images[k][mask].mean() + 0.1, sid


def test_hand_built_mask_spacing_and_orientation(hand_built: Path) -> None:
    data = load_sunnybrook(48, hand_built)
    expected = np.zeros((48, 48), dtype=np.uint8)
    top = (48 - 32) // 2  # the 32 rows are padded to a 48 x 48 square, centred
    expected[top + 8 : top + 24, 8:36] = 1
    expected[top + 12 : top + 20, 12:20] = 0
    assert np.array_equal(data.masks[0], expected)
    assert data.spacing_mm[0] == pytest.approx(0.8)
    assert data.patients == ("P1",) and data.slice_ids == ("IM-0001-0007",)
    half = load_sunnybrook(24, hand_built)
    assert half.spacing_mm[0] == pytest.approx(1.6)
    assert half.masks[0].sum() == pytest.approx(expected.sum() / 4, rel=0.1)


def test_missing_endocardial_contour_is_named(hand_built: Path) -> None:
    (hand_built / "P1" / "IM-0001-0007-icontour-manual.txt").unlink()
    with pytest.raises(ValidationDataError, match="IM-0001-0007-icontour-manual.txt: missing"):
        load_sunnybrook(32, hand_built)


def test_bad_contour_line_is_named(hand_built: Path) -> None:
    path = hand_built / "P1" / "IM-0001-0007-ocontour-manual.txt"
    path.write_text("1 2\n3 4\nfive 6\n7 8\n")
    with pytest.raises(ValidationDataError, match=r"ocontour-manual.txt, line 3: expected 'x y'"):
        load_sunnybrook(32, hand_built)


def test_instance_number_must_match_the_contour(hand_built: Path) -> None:
    dcm = hand_built / "P1" / "IM-0001-0007.dcm"
    ds = pydicom.dcmread(dcm)
    ds.InstanceNumber = 8
    ds.save_as(dcm)
    with pytest.raises(ValidationDataError, match="IM-0001-0007.dcm: InstanceNumber 8"):
        load_sunnybrook(32, hand_built)


def test_missing_folder_and_empty_patient(tmp_path: Path) -> None:
    with pytest.raises(ValidationDataError, match="no such folder"):
        load_sunnybrook(32, tmp_path / "absent")
    (tmp_path / "P2").mkdir()
    with pytest.raises(ValidationDataError, match="P2: no IM-0001-nnnn-ocontour"):
        load_sunnybrook(32, tmp_path)
