"""Reading a cohort folder (``load_dataset``): one process against loader processes.

``mprtm train`` and ``mprtm evaluate`` read every patient through the inference path
(FHIR NDJSON parsed into ``fhir.resources`` models, DICOM headers and pixels read with
pydicom, masks aligned).  That is pure Python, so it scales with processes, not threads.
This benchmark loads the first ``--patients`` patients of a folder made by
``mprtm synth`` with one process and with ``--workers`` processes, in one run, and prints
both times and their ratio.  The DICOM header index is scanned (and cached) once before
either is timed, so both read from the same warm index.  ``load_dataset`` itself uses the
processes only from 500 patients per process (each process opens the folder itself);
the benchmark times them at any size.

    python benchmarks/bench_load.py --data DIR [--patients 600] [--workers 2]

Without ``--data`` a cohort of ``--patients`` patients is synthesised into a temporary
folder first (not timed).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
import time
from pathlib import Path

import cds.dataset
from cds.config import Settings
from cds.dataset import load_dataset


def _subset(src: Path, dst: Path, n: int) -> None:
    """A folder whose labels list only the first ``n`` patients (the loader reads the
    FHIR and DICOM folders in place through links)."""
    (dst / "truth").mkdir(parents=True)
    for name in ("fhir", "dicom"):
        if (src / name).is_dir():
            (dst / name).symlink_to((src / name).resolve())
    for extra in ("risk.csv", "meta.json"):
        if (src / "truth" / extra).is_file():
            shutil.copy(src / "truth" / extra, dst / "truth" / extra)
    if (src / "truth" / "masks").is_dir():
        (dst / "truth" / "masks").symlink_to((src / "truth" / "masks").resolve())
    with (src / "truth" / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (dst / "truth" / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="folder from mprtm synth")
    ap.add_argument("--patients", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings().replace(pacs__cache_dir=str(root / "cache"))
        data = args.data
        if data is None:
            from cds.synth.generate import generate

            data = root / "cohort"
            generate(args.patients, 0, data, progress=True)
        # patients without a labels row are skipped with a warning, so the subset is
        # exactly the first --patients patients
        sub = root / "subset"
        _subset(data, sub, args.patients)
        import logging

        logging.getLogger("mprtm.dataset").setLevel(logging.ERROR)
        from cds.sources import folder_index_cache
        from connectors.pacs.folder import DicomFolderSource

        if (sub / "dicom").is_dir():  # scan the DICOM headers once, into the index cache
            DicomFolderSource(
                sub / "dicom", index_cache=folder_index_cache(settings, sub / "dicom")
            ).patient_ids()
        cds.dataset._PER_WORKER_MIN = 1  # time the processes even below their threshold
        times = {}
        counts = {}
        for workers in (1, args.workers):
            t0 = time.perf_counter()
            examples = load_dataset(
                sub,
                image_size=args.image_size,
                settings=settings,
                progress=False,
                workers=workers,
            )
            times[workers] = time.perf_counter() - t0
            counts[workers] = len(examples)
    n = counts[1]
    if counts[args.workers] != n:
        raise SystemExit(f"the loaders disagree: {counts}")
    one, many = times[1], times[args.workers]
    print(f"patients={n} image_size={args.image_size}")
    print(
        f"load  1 process {1000 * one / n:8.2f} ms/patient   {args.workers} processes "
        f"{1000 * many / n:8.2f} ms/patient   ratio {one / many:5.2f}"
    )


if __name__ == "__main__":
    main()
