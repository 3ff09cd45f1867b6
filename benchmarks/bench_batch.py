"""End-to-end batch throughput, against the bare model, measured in one run.

For one synthetic cohort and one checkpoint it measures, on the embedded default (NDJSON
folder, DICOM folder, SQLite, RiskAssessments to NDJSON, local executor):

1. a cold batch with the stages one after the other (``[batch] overlap = false``), on an
   empty database: every LGE series goes through the image branch, every text segment
   through the text encoder;
2. the same cold batch with the stages overlapped (``overlap = true``), on another empty
   database;
3. a second batch on that database (another run key, ``incremental = false``): image
   features and segment embeddings from the caches;
4. the bare model on the same patients: ``Predictor.encode_image`` for each series and
   ``Predictor.predict`` for everyone, on inputs assembled beforehand (not timed).

It prints a table, then one JSON object on its last line: ``batch_s`` (2), ``serial_s``
(1), ``bare_s`` (4), ``ratio`` (batch_s / bare_s), ``patients_per_hour`` (of 2),
``cached_s``, ``cached_patients_per_hour`` (3) and ``overlap_speedup`` (1 / 2).

    python benchmarks/bench_batch.py --patients 300 --threads 1 [--checkpoint CKPT]

Without ``--checkpoint`` a randomly initialised ``small`` network with the bundled MiniLM
text encoder is used (timing does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

from bench_inference import _random_checkpoint

from cds.batch.runner import BatchRunner, RunOptions
from cds.config import load_settings
from cds.db.migrate import upgrade
from cds.pipeline import pull
from cds.sources import make_fhir_source, make_imaging_source
from cds.synth.generate import generate
from model.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default=None, help="cohort folder (default: synthesize one)")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mprtm-bench-batch-"))
    data = Path(args.data) if args.data else work / "cohort"
    if not args.data:
        print(f"synthesizing {args.patients} patients into {data} ...", flush=True)
        generate(args.patients, 123, data, image_size=args.image_size, progress=False)
    args.checkpoint = args.checkpoint or str(_random_checkpoint(work))
    meta = json.loads((data / "truth" / "meta.json").read_text())
    as_of_date = dt.date.fromisoformat(str(meta["reference_date"])[:10])
    as_of = dt.datetime.combine(as_of_date, dt.time(23, 0), dt.UTC)

    def settings_for(db: str, overlap: bool):  # type: ignore[no-untyped-def]
        s = load_settings(environ={}).replace(
            database__url=f"sqlite:///{work / db}",
            fhir__ndjson_dir=str(data / "fhir"),
            fhir__writeback_path=str(work / "out" / f"{db}.ndjson"),
            pacs__folder=str(data / "dicom"),
            pacs__cache_dir=str(work / "cache"),
            model__checkpoint=str(args.checkpoint),
            model__cpu_threads=args.threads,
            batch__lock_file=str(work / "batch.lock"),
            batch__cohort="all",
            batch__chunk_size=32,
            batch__incremental=False,  # every run scores everyone
            batch__overlap=overlap,
        )
        upgrade(s.database.url)
        return s

    runs = {}
    plan = (
        ("cold, serial", "serial.db", False, "bench-cold"),
        ("cold, overlapped", "overlap.db", True, "bench-cold"),
        ("cached, overlapped", "overlap.db", True, "bench-cached"),
    )
    for label, db, overlap, key in plan:
        settings = settings_for(db, overlap)
        t0 = time.perf_counter()
        with BatchRunner(settings) as runner:
            summary = runner.run(RunOptions(run_key=key, as_of=as_of, progress=False))
        runs[label] = (time.perf_counter() - t0, summary)
        print(
            f"{label}: {summary.n_done} done, {summary.n_failed} failed, "
            f"stages {json.dumps({k: round(v, 1) for k, v in summary.timings.items()})}",
            flush=True,
        )

    # the bare model on the same inputs (assembly not timed)
    fhir, imaging = make_fhir_source(settings), make_imaging_source(settings)
    predictor = Predictor.from_checkpoint(args.checkpoint, threads=args.threads)
    inputs = []
    for pid in fhir.cohort_patient_ids("all"):
        try:
            inputs.append(
                pull(
                    pid,
                    fhir,
                    imaging,
                    as_of=as_of_date,
                    image_size=predictor.config.image_size,
                    settings=settings,
                ).model_input
            )
        except Exception:  # noqa: BLE001  (a patient the batch also failed)
            continue
    fhir.close()
    imaging.close()
    t0 = time.perf_counter()
    cache = {
        mi.image_fingerprint: predictor.encode_image(mi.image)
        for mi in inputs
        if mi.image is not None and mi.image_fingerprint
    }
    t_image = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor.predict(inputs, image_cache=cache)
    t_predict = time.perf_counter() - t0
    bare_cold, bare_cached = t_image + t_predict, t_predict

    n = len(inputs)
    serial_s, _ = runs["cold, serial"]
    cold_s, cold = runs["cold, overlapped"]
    cached_s, cached = runs["cached, overlapped"]
    rows = {
        "patients": n,
        "series": len(cache),
        "batch_s": round(cold_s, 2),
        "serial_s": round(serial_s, 2),
        "bare_s": round(bare_cold, 2),
        "ratio": round(cold_s / bare_cold, 3),
        "serial_ratio": round(serial_s / bare_cold, 3),
        "patients_per_hour": round(3600 * cold.n_done / cold_s),
        "cached_s": round(cached_s, 2),
        "cached_patients_per_hour": round(3600 * cached.n_done / cached_s),
        "bare_cached_s": round(bare_cached, 2),
        "overlap_speedup": round(serial_s / cold_s, 3),
        "threads": args.threads,
    }
    print()
    print(f"{'measure':28s} value")
    for k, v in rows.items():
        print(f"{k:28s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
