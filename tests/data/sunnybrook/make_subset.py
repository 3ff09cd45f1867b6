"""Rebuild this folder from a copy of the Sunnybrook Cardiac Data (CC0; see README.md).

Usage (from the repository root)::

    python tests/data/sunnybrook/make_subset.py SOURCE_DIR

``SOURCE_DIR`` is the ``final_data/`` folder of the public repository
``kwu93/image-segmentation`` (commit 932d305f5a4ebdf7f2873cc6723a4e5e919efad7): ``link.csv``,
``dicoms/<SCD id>/<image number>.dcm`` and
``contourfiles/<original id>/{i,o}-contours/IM-0001-<nnnn>-{i,o}contour-manual.txt``.

For each patient, :data:`PER_PATIENT` of the images that carry both an endocardial and an
epicardial contour are kept, spread evenly from the first to the last.  The contour files
are copied byte for byte; each DICOM file is re-encoded with RLE Lossless (the pixel
values are checked to be identical) and nothing else in it changes.
"""

from __future__ import annotations

import csv
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import RLELossless

PER_PATIENT = 6
HERE = Path(__file__).resolve().parent


def _number(contour: Path) -> int:
    return int(contour.name.split("-")[2])


def main(source: Path) -> None:
    with (source / "link.csv").open(newline="", encoding="utf-8") as fh:
        link = {row["patient_id"]: row["original_id"] for row in csv.DictReader(fh)}
    for scd, original in sorted(link.items()):
        contours = source / "contourfiles" / original
        outer = sorted(contours.glob("o-contours/IM-0001-*-ocontour-manual.txt"), key=_number)
        both = [
            n
            for n in map(_number, outer)
            if (contours / "i-contours" / f"IM-0001-{n:04d}-icontour-manual.txt").is_file()
        ]
        keep = [both[int(i)] for i in np.round(np.linspace(0, len(both) - 1, PER_PATIENT))]
        out = HERE / scd
        out.mkdir(exist_ok=True)
        for n in keep:
            stem = f"IM-0001-{n:04d}"
            for kind in ("i", "o"):
                name = f"{stem}-{kind}contour-manual.txt"
                shutil.copyfile(contours / f"{kind}-contours" / name, out / name)
            with warnings.catch_warnings():  # the source UIDs have components with leading 0
                warnings.simplefilter("ignore", UserWarning)
                ds = pydicom.dcmread(source / "dicoms" / scd / f"{n}.dcm")
                before = ds.pixel_array.copy()
                ds.compress(RLELossless, generate_instance_uid=False)
                ds.save_as(out / f"{stem}.dcm")
                after = pydicom.dcmread(out / f"{stem}.dcm").pixel_array
            if not np.array_equal(before, after):
                raise SystemExit(f"{scd}/{stem}.dcm: RLE round trip changed the pixels")
        print(f"{scd} ({original}): images {keep}")  # noqa: T201


if __name__ == "__main__":
    main(Path(sys.argv[1]))
