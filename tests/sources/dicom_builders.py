"""Small synthetic DICOM MR series for the imaging tests (written with pydicom)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

SAX = (1.0, 0.0, 0.0, 0.0, 0.8, -0.6)  # an oblique short-axis-like orientation


def normal(iop: tuple[float, ...]) -> np.ndarray:
    n = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    return n / np.linalg.norm(n)


def make_slice(
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    description: str,
    pixels: np.ndarray,
    position: tuple[float, float, float] | None,
    orientation: tuple[float, ...] | None = SAX,
    instance_number: int | None = 1,
    protocol: str = "",
    study_date: str = "20260101",
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "MR",
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    sop = generate_uid()
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.ProtocolName = protocol
    ds.StudyDate = study_date
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_series(
    folder: Path,
    *,
    patient_id: str,
    description: str,
    n_slices: int = 6,
    shape: tuple[int, int] = (32, 32),
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: str = "20260101",
    protocol: str = "",
    slope: float = 1.0,
    intercept: float = 0.0,
    spacing: float = 8.0,
    with_position: bool = True,
    seed: int = 0,
) -> tuple[str, list[Dataset]]:
    """Write a series whose slice k has all pixels equal to 100 + 10 k (plus a square),
    in shuffled file order.  Returns (SeriesInstanceUID, datasets in spatial order)."""
    rng = random.Random(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    n = normal(SAX)
    origin = np.asarray([-50.0, -40.0, 30.0])
    out = []
    for k in range(n_slices):
        img = np.full(shape, 100 + 10 * k, dtype=np.uint16)
        img[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] += 200
        pos = tuple(origin + n * spacing * k) if with_position else None
        out.append(
            make_slice(
                patient_id=patient_id,
                study_uid=study_uid,
                series_uid=series_uid,
                description=description,
                protocol=protocol,
                pixels=img,
                position=pos,  # type: ignore[arg-type]
                orientation=SAX if with_position else None,
                # instance numbers deliberately run against the spatial order
                instance_number=n_slices - k,
                study_date=study_date,
                slope=slope,
                intercept=intercept,
            )
        )
    target = folder / study_uid / series_uid
    target.mkdir(parents=True, exist_ok=True)
    names = [f"{rng.random():.12f}.dcm" for _ in out]
    for ds, name in zip(out, names, strict=True):
        ds.save_as(target / name, enforce_file_format=True)
    return series_uid, out
