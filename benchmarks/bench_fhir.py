"""Patients per second pulled from the local FHIR engine by per-patient searches, against
a Bulk Data export of the same cohort (download + NDJSON source) -- ratios from one run.

    python benchmarks/bench_fhir.py --patients 40          # synthesise, load, measure
    python benchmarks/bench_fhir.py --data DIR             # an existing cohort folder

It starts the test FHIR engine (tests/servers/fhir, Node) on a free port, loads the cohort
with the load-fhir loader (validation on), then times:

* REST, 1 and ``--concurrency`` workers: Group members, then Patient read plus the seven
  per-patient searches (Observation by the model's LOINC list, Condition, Medication*,
  DocumentReference with attachments, ImagingStudy, Encounter) into typed R4B records;
* Bulk: ``Group/<id>/$export`` kick-off, status poll (Retry-After 0), streamed download
  from the Bulk Data IG test server (tests/servers/bulk), then the NDJSON folder source
  turning the download into the same typed records.

The two server sides differ (the engine searches an in-memory repository; the bulk test
server streams prepared files), so the ratio measures the client-visible cost of each
access pattern on this machine, not two implementations of one server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cds.clinical_tables import loinc_index  # noqa: E402
from connectors.fhir._http import FhirHttp  # noqa: E402
from connectors.fhir.bulk import BulkExporter  # noqa: E402
from connectors.fhir.loader import load_folder  # noqa: E402
from connectors.fhir.ndjson import NdjsonFolderSource  # noqa: E402
from connectors.fhir.rest import from_settings  # noqa: E402
from tests.servers.bulk.server import BulkTestServer  # noqa: E402
from tests.servers.fhir_engine import start_engine  # noqa: E402


def synthesise(n: int, out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "synth",
            "--patients",
            str(n),
            "--seed",
            "11",
            "--out",
            str(out),
            "--no-images",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out / "fhir"


def group_id(folder: Path) -> str:
    return str(json.loads((folder / "Group.ndjson").read_text().splitlines()[0])["id"])


def rest_pull(base_url: str, gid: str, codes: tuple[str, ...], workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    with from_settings(base_url=base_url, max_concurrency=workers, page_size=200) as src:
        ids = src.cohort_patient_ids(f"group:{gid}")
        n_res = 0
        for pid, rec in src.iter_patient_records(ids, loinc_codes=codes, workers=workers):
            if isinstance(rec, Exception):
                raise SystemExit(f"REST pull failed for {pid}: {rec}")
            n_res += len(rec.observations) + len(rec.conditions) + len(rec.documents)
    return time.perf_counter() - t0, len(ids)


def bulk_pull(base_url: str, gid: str, codes: tuple[str, ...], out: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with BulkExporter(FhirHttp(base_url), min_poll_s=0.01, progress=False) as ex:
        ex.export(out, group_id=gid)
    src = NdjsonFolderSource(out)
    try:
        ids = src.cohort_patient_ids("all")
        for pid in ids:
            src.patient_record(pid, loinc_codes=codes)
    finally:
        src.close()
    return time.perf_counter() - t0, len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--data", type=Path, default=None, help="existing cohort (DIR/fhir)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="best of N for each measurement")
    args = ap.parse_args()
    codes = tuple(sorted(loinc_index()))
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        folder = (args.data / "fhir") if args.data else synthesise(args.patients, tmpd / "c")
        if not folder.is_dir():
            folder = args.data
        gid = group_id(folder)
        with start_engine() as engine:
            with from_settings(base_url=engine.base_url) as src:
                t0 = time.perf_counter()
                report = load_folder(src.client, folder, batch_size=50)
                load_s = time.perf_counter() - t0
            if report.rejected:
                raise SystemExit(f"{len(report.rejected)} resources rejected while loading")
            rows = []
            for workers in (1, args.concurrency):
                best = min(
                    rest_pull(engine.base_url, gid, codes, workers) for _ in range(args.repeat)
                )
                rows.append((f"REST per-patient searches, {workers} worker(s)", *best))
        server = BulkTestServer(folder, polls_before_done=0, retry_after=0).start()
        try:
            best_bulk = min(
                bulk_pull(server.base_url, gid, codes, tmpd / f"bulk{i}")
                for i in range(args.repeat)
            )
        finally:
            server.stop()
        rows.append(("Bulk $export + NDJSON source", *best_bulk))
    n_res = report.total_loaded
    print(
        f"cohort: {rows[0][2]} patients, {n_res} resources; load-fhir {load_s:.1f}s "
        f"({n_res / load_s:.0f} resources/s, validation on)"
    )
    base = rows[0][2] / rows[0][1]
    print(f"{'method':<44} {'seconds':>8} {'patients/s':>11} {'vs REST x1':>11}")
    for name, secs, n in rows:
        print(f"{name:<44} {secs:>8.2f} {n / secs:>11.1f} {n / secs / base:>10.1f}x")


if __name__ == "__main__":
    main()
