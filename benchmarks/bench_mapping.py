"""Patients per second through the NDJSON source + mapping (+ DICOM folder + pixels),
against bare JSON parsing (and bare pydicom reads) of the same files.

    python benchmarks/bench_mapping.py --data DIR            # an existing cohort folder
    python benchmarks/bench_mapping.py --patients 500        # synthesise one first

Prints one table; every ratio is measured in this run.
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


def bare_json(folder: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for path in sorted(folder.glob("*.ndjson")):
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    json.loads(line)
                    n += 1
    return time.perf_counter() - t, n


def bare_dicom(folder: Path) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _ = pydicom.dcmread(path).pixel_array  # decode the pixels, as the pipeline does
        n += 1
    return time.perf_counter() - t, n


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
    t0 = time.perf_counter()
    src = NdjsonFolderSource(fhir_dir)
    t_index = time.perf_counter() - t0
    ids = src.cohort_patient_ids("all")

    t0 = time.perf_counter()
    codes = tuple(sorted(loinc_index()))
    for pid in ids:
        src.patient_record(pid, loinc_codes=codes)
    t_pull = time.perf_counter() - t0

    t0 = time.perf_counter()
    for pid in ids:
        pull(pid, src, None, as_of=as_of, image_size=args.image_size, settings=settings)
    t_fhir = time.perf_counter() - t0

    rows = [
        ("patients", f"{len(ids)}"),
        ("NDJSON lines", f"{n_lines}"),
        ("bare json.loads of every line", f"{t_json:.2f} s"),
        ("NDJSON source: open (index)", f"{t_index:.2f} s"),
        ("NDJSON source: pull all (R4B parse)", f"{t_pull:.2f} s"),
        ("source + mapping, all patients", f"{t_index + t_fhir:.2f} s"),
        ("patients/s (source + mapping)", f"{len(ids) / (t_index + t_fhir):.0f}"),
        ("ratio (source + mapping) / bare JSON", f"{(t_index + t_fhir) / t_json:.1f}x"),
    ]
    if use_images:
        t_dcm, n_files = bare_dicom(dicom_dir)
        img = DicomFolderSource(dicom_dir)
        t0 = time.perf_counter()
        img.scan()
        t_scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_img = 0
        for pid in ids:
            m = pull(pid, src, img, as_of=as_of, image_size=args.image_size, settings=settings)
            n_img += m.model_input.image is not None
        t_all = time.perf_counter() - t0
        rows += [
            ("DICOM files", f"{n_files}"),
            ("bare pydicom read + decode of every file", f"{t_dcm:.2f} s"),
            ("DICOM folder: header scan", f"{t_scan:.2f} s"),
            ("patients with an LGE image", f"{n_img}"),
            ("everything (index + scan + pull + images)", f"{t_index + t_scan + t_all:.2f} s"),
            ("patients/s (everything)", f"{len(ids) / (t_index + t_scan + t_all):.1f}"),
            ("ratio images part / bare DICOM", f"{(t_scan + t_all - t_fhir) / t_dcm:.1f}x"),
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
