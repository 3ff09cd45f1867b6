"""In-memory MR instances with chosen acquisition attributes, for recognition tests.

``mr_series`` builds a classic MR Image Storage series (one slice per position, or
several cardiac phases / inversion times per position) with small random pixels;
``legacy_enhanced`` converts such a series into one Legacy Converted Enhanced MR
instance with highdicom, as a PACS or scanner converter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from highdicom.legacy import LegacyConvertedEnhancedMRImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def mr_series(
    *,
    n_positions: int = 4,
    phases: Sequence[dict[str, Any]] = ({},),
    size: int = 16,
    seed: int = 0,
    smooth: bool = False,
    **attrs: Any,
) -> list[Dataset]:
    """One series: ``n_positions`` slice positions times ``len(phases)`` images each.

    Args:
        n_positions: slice positions 8 mm apart along the normal of an axial plane.
        phases: per-image attributes at each position (e.g. ``{"TriggerTime": 40.0}``).
        size: rows and columns.
        seed: pixel generator seed.
        smooth: a smooth phantom (bright ring on a gradient, mild noise) instead of
            uniform noise, so that lossy codecs keep their usual fidelity.
        **attrs: attributes of every instance (keyword=value), e.g. ``EchoTime=1.2``.
    """
    rng = np.random.default_rng(seed)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    out: list[Dataset] = []
    for p in range(n_positions):
        for k, extra in enumerate(phases):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = MR_IMAGE_STORAGE
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = "T1"
            ds.PatientName = "Test^Synthetic"
            ds.PatientBirthDate = "19600101"
            ds.PatientSex = "O"
            ds.StudyInstanceUID = study_uid
            ds.StudyDate = "20250115"
            ds.StudyTime = "101500"
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.Manufacturer = "TEST"
            ds.Modality = "MR"
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = 1
            ds.InstanceNumber = p * len(phases) + k + 1
            ds.FrameOfReferenceUID = frame_uid
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ImagePositionPatient = [-100.0, -100.0, float(8 * p)]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [1.5, 1.5]
            ds.SliceThickness = 8.0
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = size
            ds.Columns = size
            ds.BitsAllocated = 16
            ds.BitsStored = 12
            ds.HighBit = 11
            ds.PixelRepresentation = 0
            ds.WindowCenter = 2048
            ds.WindowWidth = 4096
            ds.PixelData = _pixels(rng, size, p, smooth).tobytes()
            for key, value in {**attrs, **extra}.items():
                setattr(ds, key, value)
            out.append(ds)
    return out


def _pixels(rng: np.random.Generator, size: int, position: int, smooth: bool) -> np.ndarray:
    if not smooth:
        return rng.integers(0, 4096, (size, size), dtype=np.uint16)
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    r = np.hypot(x, y)
    ring = np.exp(-(((r - 0.25 - 0.01 * position) / 0.05) ** 2))
    img = 600 + 800 * (x + 0.5) + 2000 * ring + rng.normal(0, 20, (size, size))
    return np.clip(img, 0, 4095).astype(np.uint16)


def legacy_enhanced(datasets: Sequence[Dataset]) -> Dataset:
    """The series as one Legacy Converted Enhanced MR Image (highdicom)."""
    return LegacyConvertedEnhancedMRImage(
        legacy_datasets=list(datasets),
        series_instance_uid=generate_uid(),
        series_number=90,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
