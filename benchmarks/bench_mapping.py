"""Patients per second through the NDJSON source + mapping (+ DICOM folder + pixels),
against bare JSON parsing (and bare pydicom reads) of the same files.

    python benchmarks/bench_mapping.py --data DIR            # an existing cohort folder
    python benchmarks/bench_mapping.py --patients 500        # synthesise one first

Prints one table; every ratio is measured in this run.  Times are process CPU seconds
(``time.process_time``), so a busy shared machine does not distort them; wall-clock
seconds are shown beside them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from cds.clinical_tables import loinc_index
from cds.config import Settings
from cds.errors import UsageError
from cds.pipeline import pull
from connectors.fhir.ndjson import NdjsonFolderSource
from connectors.pacs.folder import DicomFolderSource


class Clock:
    """Wall and CPU seconds since construction."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def fmt(t: tuple[float, float]) -> str:
    return f"{t[1]:.2f} s CPU ({t[0]:.2f} s wall)"


def bare_json(folder: Path) -> tuple[tuple[float, float], int]:
    c = Clock()
    n = 0
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    json.loads(line)
                    n += 1
    return c.stop(), n


def bare_dicom(folder: Path) -> tuple[tuple[float, float], int]:
    c = Clock()
    n = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _ = pydicom.dcmread(path).pixel_array  # decode the pixels, as the pipeline does
        n += 1
    return c.stop(), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="cohort folder with fhir/ (and dicom/)")
    ap.add_argument("--patients", type=int, default=300, help="synthesise this many (no --data)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--as-of", default="2026-11-01")
    ap.add_argument("--no-images", action="store_true")
    args = ap.parse_args()
    tmp = None
    data: Path
    if args.data is None:
        from cds.synth.generate import generate

        tmp = tempfile.TemporaryDirectory()
        data = Path(tmp.name) / "cohort"
        try:
            generate(args.patients, 0, data, images=not args.no_images, progress=False)
        except UsageError as exc:  # this build's simulator may not write images yet
            print(f"(synth with images failed: {exc}; FHIR only)", file=sys.stderr)
            data = Path(tmp.name) / "cohort-fhir"
            generate(args.patients, 0, data, images=False, progress=False)
    else:
        data = args.data
    as_of = dt.date.fromisoformat(args.as_of)
    settings = Settings()
    fhir_dir, dicom_dir = data / "fhir", data / "dicom"
    use_images = not args.no_images and dicom_dir.is_dir()

    t_json, n_lines = bare_json(fhir_dir)
    c = Clock()
    src = NdjsonFolderSource(fhir_dir)
    t_index = c.stop()
    ids = src.cohort_patient_ids("all")

    c = Clock()
    codes = tuple(sorted(loinc_index()))
    for pid in ids:
        src.patient_record(pid, loinc_codes=codes)
    t_pull = c.stop()

    c = Clock()
    for pid in ids:
        pull(pid, src, None, as_of=as_of, image_size=args.image_size, settings=settings)
    t_fhir = c.stop()
    total = (t_index[0] + t_fhir[0], t_index[1] + t_fhir[1])

    rows = [
        ("patients", f"{len(ids)}"),
        ("NDJSON lines", f"{n_lines}"),
        ("bare json.loads of every line", fmt(t_json)),
        ("NDJSON source: open (index)", fmt(t_index)),
        ("NDJSON source: pull all (R4B parse)", fmt(t_pull)),
        ("source + mapping, all patients", fmt(total)),
        ("patients/s (source + mapping, CPU)", f"{len(ids) / total[1]:.0f}"),
        ("ratio (source + mapping) / bare JSON (CPU)", f"{total[1] / t_json[1]:.1f}x"),
    ]
    if use_images:
        t_dcm, n_files = bare_dicom(dicom_dir)
        img = DicomFolderSource(dicom_dir)  # no index cache: the first, full scan
        c = Clock()
        img.scan()
        t_scan = c.stop()
        c = Clock()
        n_img = 0
        for pid in ids:
            m = pull(pid, src, img, as_of=as_of, image_size=args.image_size, settings=settings)
            n_img += m.model_input.image is not None
        t_all = c.stop()
        everything = t_index[1] + t_scan[1] + t_all[1]
        images_part = t_scan[1] + t_all[1] - t_fhir[1]
        rows += [
            ("DICOM files", f"{n_files}"),
            ("bare pydicom read + decode of every file", fmt(t_dcm)),
            ("DICOM folder: header scan", fmt(t_scan)),
            ("patients with an LGE image", f"{n_img}"),
            ("everything (index + scan + pull + images)", f"{everything:.2f} s CPU"),
            ("patients/s (everything, CPU)", f"{len(ids) / everything:.1f}"),
            ("ratio images part / bare DICOM (CPU)", f"{images_part / t_dcm[1]:.1f}x"),
        ]
    src.close()
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
