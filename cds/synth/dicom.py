"""Write a patient's cardiac MR study as DICOM files and its ground-truth masks.

MR Image Storage (1.2.840.10008.5.1.4.1.1.4), explicit VR little endian, 16-bit words
with 12 bits stored and a rescale slope/intercept; UIDs from pydicom's hashed root with
a deterministic entropy source, no timestamps, so the same seed gives the same bytes.
Slices of a series share an ImageOrientationPatient; ImagePositionPatient advances by
SpacingBetweenSlices along the slice normal (row x column direction cosines).  Matrix,
pixel spacing, slice thickness, gap, inversion time and the reconstruction (magnitude or
PSIR) are those of the study's :class:`cds.synth._mr.Acquisition`.
"""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from cds.synth import _ids
from cds.synth._mr import Acquisition, draw_acquisition, ssfp_signal
from cds.synth.cohort import Cohort
from cds.synth.fhir import SeriesInfo, StudyInfo
from cds.synth.images import HeartGeometry, lge_volume, localizer
from cds.synth.visits import Visits

LGE_DESCRIPTIONS = {
    True: ("LGE PSIR SAX", "SAX LGE PSIR", "LGE SA PSIR", "PSIR short axis LGE", "DE SAX PSIR"),
    False: ("LGE SAX MAG", "SAX LGE", "LGE SA magnitude", "LGE IR SAX", "late gad SAX"),
}
LGE_PROTOCOLS = ("LGE_PSIR_SAX", "cardiac_LGE_sax", "DE_PSIR_SA")
MANUFACTURERS = (
    ("SIEMENS", "Aera", 1.5),
    ("GE MEDICAL SYSTEMS", "SIGNA Artist", 1.5),
    ("Philips", "Ingenia", 3.0),
)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A double-oblique short-axis orientation: rotation about z, then about the new x."""
    a, b = rng.uniform(-0.9, -0.4), rng.uniform(0.5, 1.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _ds(values: list[float], nd: int = 6) -> list[str]:
    return [f"{round(float(v), nd):.{nd}f}".rstrip("0").rstrip(".") or "0" for v in values]


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with a fixed timestamp, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


class _SeriesWriter:
    """Shared attributes of one study; writes series of slices."""

    def __init__(
        self, c: Cohort, vis: Visits, i: int, out: Path, acq: Acquisition, rng: np.random.Generator
    ):
        self.c, self.i, self.acq, self.rng = c, i, acq, rng
        self.size = acq.matrix
        seed = c.seed
        self.study_uid = _ids.dicom_uid(seed, i, "study")
        self.frame_uid = _ids.dicom_uid(seed, i, "frame")
        self.day = int(vis.days[i, 0]) - 1 + max(1, int(c.length_of_stay[i]) - 2)
        self.date = (c.reference_date + timedelta(days=self.day)).strftime("%Y%m%d")
        age_days = int(round(c.age[i] * 365.25)) + int(c.index_days[i] % 97)
        self.birth = (c.reference_date - timedelta(days=age_days)).strftime("%Y%m%d")
        self.maker = MANUFACTURERS[int(rng.integers(0, len(MANUFACTURERS)))]
        self.pixel_mm = acq.pixel_mm
        self.rot = _rotation(rng)
        self.centre = rng.normal(0, 15, 3) + np.array([20.0, -10.0, 30.0])
        self.root = out / "dicom" / self.study_uid

    def write(
        self, number: int, description: str, protocol: str, img: np.ndarray, kind: str
    ) -> SeriesInfo:
        c, i, size, rng = self.c, self.i, self.size, self.rng
        series_uid = _ids.dicom_uid(c.seed, i, "series", number)
        folder = self.root / series_uid
        folder.mkdir(parents=True, exist_ok=True)
        slope = float(rng.choice([1.0, 0.5, 2.0]))
        intercept = float(rng.choice([0.0, -1024.0]))
        sample = img[:, ::2, ::2]  # percentiles of every 4th pixel: a window, not a measurement
        gain = rng.uniform(2500, 3600) / max(float(np.percentile(sample, 99.5)), 1e-3)
        stored = np.clip(np.rint(img * gain), 0, 4095).astype(np.uint16)
        real = stored * slope + intercept  # the real-world values the rescale defines
        lo, hi = np.percentile(real[:, ::2, ::2], [1, 99.5])
        r, col = self.rot[:, 0], self.rot[:, 1]
        normal = np.cross(r, col)
        spacing = self.acq.spacing_mm
        s_n = img.shape[0]
        ds = self._dataset(series_uid, number, description, protocol, kind)
        ds.ImageOrientationPatient = _ds([*r, *col], 6)
        ds.RescaleSlope = _ds([slope])[0]
        ds.RescaleIntercept = _ds([intercept])[0]
        ds.RescaleType = "US"
        ds.WindowCenter = _ds([(lo + hi) / 2], 1)[0]
        ds.WindowWidth = _ds([max(hi - lo, 1.0)], 1)[0]
        sop_uids = []
        for k in range(s_n):  # one dataset per series; only slice attributes change
            sop = UID(_ids.dicom_uid(c.seed, i, "sop", number, k))
            sop_uids.append(str(sop))
            off = (k - (s_n - 1) / 2) * spacing if kind != "cine" else 0.0
            centre = self.centre + off * normal
            pos = centre - (size / 2) * self.pixel_mm * (r + col)
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.SOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = _ds(list(pos), 4)
            ds.SliceLocation = _ds([float(np.dot(centre, normal))], 4)[0]
            if kind == "cine":
                ds.TriggerTime = _ds([k * 45.0], 1)[0]
            ds.PixelData = stored[k].tobytes()
            ds.save_as(folder / f"{k + 1:03d}.dcm", enforce_file_format=True)
        return SeriesInfo(series_uid, number, description, tuple(sop_uids))

    def _dataset(
        self, series_uid: str, number: int, desc: str, protocol: str, kind: str
    ) -> Dataset:
        c, i, size = self.c, self.i, self.size
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        if kind == "loc":
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        elif kind == "lge" and self.acq.psir:
            ds.ImageType = ["DERIVED", "PRIMARY", "PSIR", "NONE"]
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SOPClassUID = MRImageStorage
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = self.date
        ds.StudyTime = "130000"
        ds.SeriesTime = ds.ContentTime = f"13{number:02d}00"
        ds.AccessionNumber = f"ACC{c.mrns[i][3:]}"
        ds.Modality = "MR"
        ds.Manufacturer = self.maker[0]
        ds.ManufacturerModelName = self.maker[1]
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "CARDIAC MRI"
        ds.SeriesDescription = desc
        ds.ProtocolName = protocol
        ds.PatientName = ""
        ds.PatientID = c.mrns[i]
        ds.PatientBirthDate = self.birth
        ds.PatientSex = "M" if c.male[i] else "F"
        ds.BodyPartExamined = "HEART"
        ds.ScanningSequence = ["GR", "IR"] if kind == "lge" else ["GR"]
        ds.SequenceVariant = ["SP", "MP"] if kind == "lge" else ["SS"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds([self.acq.thickness_mm])[0]
        ds.SpacingBetweenSlices = _ds([self.acq.spacing_mm])[0]
        ds.RepetitionTime = "700" if kind == "lge" else "40"
        ds.EchoTime = "1.6"
        ds.EchoTrainLength = "1"
        if kind == "lge":
            ds.InversionTime = _ds([self.acq.ti_ms], 1)[0]
            ds.ContrastBolusAgent = "Gadobutrol"
        ds.MagneticFieldStrength = _ds([self.maker[2]])[0]
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = self.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = number
        ds.FrameOfReferenceUID = self.frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = _ds([self.pixel_mm, self.pixel_mm], 6)
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        return ds


def write_study(c: Cohort, vis: Visits, i: int, out: Path, size: int, n_slices: int) -> StudyInfo:
    """Write patient ``i``'s study (LGE series, maybe a localizer or cine) and its masks.

    Args:
        size: largest matrix (rows = columns); the study's own is FOV / pixel spacing.
    """
    rng = np.random.default_rng([c.seed, i, 0xD1C0])
    acq = draw_acquisition(rng, size)
    w = _SeriesWriter(c, vis, i, out, acq, rng)
    geom = HeartGeometry(
        lv_diameter_mm=float(c.values["lvdd"][i]),
        wall_mm=float(c.values["ivstd"][i]),
        burden=float(c.burden[i]),
        ischaemic=bool(c.ischaemic[i]),
    )
    series: list[SeriesInfo] = []
    extra = int(c.extra_series[i])
    if extra == 1:
        loc = localizer(rng, acq.matrix)
        series.append(w.write(1, "localizer", "3-plane localizer", loc, "loc"))
    elif extra == 2:
        cine_geom = HeartGeometry(geom.lv_diameter_mm, geom.wall_mm, 0.0, False)
        one = lge_volume(rng, cine_geom, acq, 1, False, ssfp_signal(rng)).image
        cine = np.repeat(one, 5, axis=0)
        series.append(w.write(2, "CINE SSFP SAX mid", "cine_ssfp_sax", cine, "cine"))
    sim = lge_volume(rng, geom, acq, n_slices)
    number = 9 + int(rng.integers(0, 8))
    names = LGE_DESCRIPTIONS[acq.psir]
    desc = names[int(rng.integers(0, len(names)))]
    proto = LGE_PROTOCOLS[int(rng.integers(0, len(LGE_PROTOCOLS)))]
    lge = w.write(number, desc, proto, sim.image, "lge")
    series.append(lge)
    masks_dir = out / "truth" / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    save_npz(masks_dir / f"{lge.uid}.npz", masks=sim.mask, sop_instance_uids=np.array(lge.sop_uids))
    return StudyInfo(w.study_uid, w.day, tuple(series))
