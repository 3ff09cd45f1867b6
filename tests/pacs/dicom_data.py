"""Small MR test series written with pydicom (a few 32x32 slices per series).

``write_patient`` writes one study of three series as a scanner would: an "LGE PSIR SAX"
stack, a "localizer" and a "cine" series, each slice with its own position and pixels
drawn from a seeded generator, so that retrieved pixel data can be compared with what
was sent.  Names and birth dates are synthetic placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

#: (SeriesDescription, ProtocolName, number of slices) of the series in each test study.
SERIES_PLAN = (
    ("LGE PSIR SAX", "LGE_PSIR_SAX", 6),
    ("localizer", "Localizer", 3),
    ("cine SSFP SAX", "Cine_SSFP", 4),
)


@dataclass(frozen=True)
class WrittenSeries:
    """What was written for one series (for comparisons after retrieval)."""

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    description: str
    files: tuple[Path, ...]
    pixels: dict[str, bytes]  # SOPInstanceUID -> PixelData


def write_series(
    out: Path,
    *,
    patient_id: str,
    study_uid: str,
    description: str,
    protocol: str,
    n_slices: int,
    series_number: int,
    seed: int,
    size: int = 32,
    study_date: str = "20250115",
) -> WrittenSeries:
    """Write ``n_slices`` MR Image Storage files of one series under ``out``."""
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    frame_uid = generate_uid()
    folder = out / study_uid / series_uid
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    pixels: dict[str, bytes] = {}
    for i in range(n_slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.PatientID = patient_id
        ds.PatientName = "Test^Synthetic"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = study_date
        ds.StudyTime = "101500"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.ProtocolName = protocol
        ds.InstanceNumber = i + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.ImagePositionPatient = [-100.0, -100.0, float(8 * i)]
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
        ds.RescaleSlope = 1
        ds.RescaleIntercept = 0
        arr = rng.integers(0, 4096, size=(size, size), dtype=np.uint16)
        ds.PixelData = arr.tobytes()
        path = folder / f"{i + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        pixels[sop_uid] = bytes(ds.PixelData)
    return WrittenSeries(patient_id, study_uid, series_uid, description, tuple(files), pixels)


def write_patient(out: Path, patient_id: str, seed: int, size: int = 32) -> list[WrittenSeries]:
    """One MR study with the three series of :data:`SERIES_PLAN`."""
    study_uid = generate_uid()
    return [
        write_series(
            out,
            patient_id=patient_id,
            study_uid=study_uid,
            description=desc,
            protocol=protocol,
            n_slices=n,
            series_number=k + 1,
            seed=seed * 100 + k,
            size=size,
        )
        for k, (desc, protocol, n) in enumerate(SERIES_PLAN)
    ]
