"""The Sunnybrook Cardiac Data subset as model-sized images and myocardium masks.

The Sunnybrook Cardiac Data (Radau et al., The MIDAS Journal 2009; public domain, CC0 1.0)
are cine short-axis MR series of heart-failure and other patients with expert endocardial
and epicardial contours.  A small subset ships in ``tests/data/sunnybrook/`` (its
README.md gives the licence, the citation and how it was cut).  They are cine (SSFP-like,
bright blood) images, not LGE: they test anatomy and localisation of the myocardium,
never the enhancement class.

Layout of the folder: one sub-folder per patient (``SCD0000101`` ...), and in it, per
contoured image number ``nnnn``: ``IM-0001-nnnn.dcm`` (the image, InstanceNumber ``nnnn``),
``IM-0001-nnnn-icontour-manual.txt`` (endocardium) and ``IM-0001-nnnn-ocontour-manual.txt``
(epicardium).  A contour file holds one ``x y`` point per line in pixel units of the
image (x along the columns, y along the rows, a pixel's centre at its integer index).

Each slice becomes what the model reads from a PACS series (``connectors/pacs/pixels.py``):
modality values, padded to a square and resampled to ``size`` pixels; each patient's
slices are normalised together as one series (1st..99th percentile to 0..1).  The label
mask is 1 (myocardium) for pixel centres inside the epicardial and outside the
endocardial contour, 0 elsewhere (the blood pool is background); it is drawn at the
image's own resolution and resampled by nearest neighbour on the same grid.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
from matplotlib.path import Path as Polygon
from pydicom.errors import InvalidDicomError

from cds.errors import ValidationDataError
from connectors.errors import DicomInvalid
from connectors.pacs.pixels import normalise, resample_slice, slice_pixels, volume_spacing_mm
from model.real_anatomy import LabelledSlices

#: The subset shipped with the source tree (absent from an installed wheel).
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "sunnybrook"

_OUTER = re.compile(r"^IM-0001-(\d{4})-ocontour-manual\.txt$")


#: The report heading and statement of what these images are and may be used for.
NAME = "Sunnybrook cine MR (not LGE)"
DESCRIPTION = (
    "Sunnybrook Cardiac Data (Radau et al., The MIDAS Journal 2009; public domain, CC0 "
    "1.0): cine short-axis MR of heart-failure patients with expert endocardial and "
    "epicardial contours. These are cine images, not LGE: they test the anatomy and "
    "localisation of the myocardium only. The enhancement class is never evaluated on "
    "them, and they are never used to train."
)


def read_contour(path: Path) -> np.ndarray:
    """The (K, 2) ``x, y`` points of a contour file.

    Raises:
        ValidationDataError: unreadable file, a line that is not two numbers, or fewer
            than 3 points; names the file (and the line).
    """
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationDataError(f"{path}: cannot read ({type(exc).__name__})") from None
    points = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError(line)
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValidationDataError(f"{path}, line {k}: expected 'x y'") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValidationDataError(f"{path}, line {k}: coordinates must be finite")
        points.append((x, y))
    if len(points) < 3:
        raise ValidationDataError(f"{path}: a contour needs at least 3 points, got {len(points)}")
    return np.asarray(points, dtype=np.float64)


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (rows, columns) mask of the pixel centres inside the closed polygon
    ``points`` ((K, 2) ``x, y`` in pixel units)."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
    inside = Polygon(points, closed=False).contains_points(centres)
    return np.asarray(inside, dtype=bool).reshape(rows, cols)


def myocardium_mask(endo: np.ndarray, epi: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (rows, columns): 1 between the endocardial and the epicardial contour."""
    ring = polygon_mask(epi, shape) & ~polygon_mask(endo, shape)
    return ring.astype(np.uint8)


def _read_slice(dcm: Path, number: int, size: int) -> tuple[np.ndarray, float]:
    """Modality values of one image, and its spacing once resampled to ``size``."""
    try:
        ds = pydicom.dcmread(dcm)
    except (OSError, InvalidDicomError) as exc:
        raise ValidationDataError(f"{dcm}: not a readable DICOM file ({exc})") from None
    if int(ds.get("InstanceNumber", -1) or -1) != number:
        raise ValidationDataError(
            f"{dcm}: InstanceNumber {ds.get('InstanceNumber')} does not match the contour "
            f"file's image number {number}"
        )
    spacing = volume_spacing_mm(ds, size)
    if spacing is None:
        raise ValidationDataError(f"{dcm}: no usable PixelSpacing")
    try:
        return slice_pixels(ds), spacing
    except DicomInvalid as exc:
        raise ValidationDataError(f"{dcm}: {exc}") from None


def _patient(folder: Path, size: int) -> LabelledSlices:
    """The contoured slices of one patient folder."""
    numbers = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _OUTER.match(p.name)))
    if not numbers:
        raise ValidationDataError(f"{folder}: no IM-0001-nnnn-ocontour-manual.txt file")
    images, masks, spacing = [], [], []
    for n in numbers:
        stem = folder / f"IM-0001-{n:04d}"
        endo_file = Path(f"{stem}-icontour-manual.txt")
        dcm = Path(f"{stem}.dcm")
        for needed in (endo_file, dcm):
            if not needed.is_file():
                raise ValidationDataError(f"{needed}: missing (its epicardial contour exists)")
        pixels, mm = _read_slice(dcm, n, size)
        epi = read_contour(Path(f"{stem}-ocontour-manual.txt"))
        endo = read_contour(endo_file)
        mask = myocardium_mask(endo, epi, pixels.shape)
        if not mask.any():
            raise ValidationDataError(f"{stem}-ocontour-manual.txt: no myocardium between contours")
        images.append(resample_slice(pixels, size))
        masks.append(resample_slice(mask, size, nearest=True).astype(np.uint8))
        spacing.append(mm)
    return LabelledSlices(
        images=normalise(np.stack(images)),
        masks=np.stack(masks),
        patients=(folder.name,) * len(numbers),
        slice_ids=tuple(f"IM-0001-{n:04d}" for n in numbers),
        spacing_mm=np.asarray(spacing, dtype=np.float64),
        name=NAME,
        description=DESCRIPTION,
    )


def load_sunnybrook(size: int, folder: str | Path = DEFAULT_DIR) -> LabelledSlices:
    """Every contoured slice of every patient sub-folder of ``folder``, in name order:
    images (float32, [0, 1]) and masks (1 myocardium) of ``size`` x ``size`` pixels.

    Args:
        size: in-plane side of the output (the model's ``ModelConfig.input_size``, what a
            PACS series is resampled to before the model's own crop).
        folder: the subset (default: the one shipped in ``tests/data/sunnybrook``).

    Raises:
        ValidationDataError: a missing folder or file, or a malformed contour or image;
            names the file.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    root = Path(folder)
    if not root.is_dir():
        raise ValidationDataError(f"{root}: no such folder (the Sunnybrook subset)")
    parts = [_patient(p, size) for p in sorted(root.iterdir()) if p.is_dir()]
    if not parts:
        raise ValidationDataError(f"{root}: no patient folders")
    return LabelledSlices(
        images=np.concatenate([p.images for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        patients=tuple(x for p in parts for x in p.patients),
        slice_ids=tuple(x for p in parts for x in p.slice_ids),
        spacing_mm=np.concatenate([p.spacing_mm for p in parts]),
        name=NAME,
        description=DESCRIPTION,
    )
