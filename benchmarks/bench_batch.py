"""End-to-end batch throughput, against the bare model, measured in one run.

For one synthetic cohort and one checkpoint it measures, on the embedded default (NDJSON
folder, DICOM folder, SQLite, RiskAssessments to NDJSON, local executor):

1. a cold batch: every LGE series goes through the image branch;
2. a second batch on the same database (another run key): image features from the cache;
3. the bare model on the same patients: ``Predictor.encode_image`` for each series and
   ``Predictor.predict`` for everyone, on inputs assembled beforehand (not timed).

It prints patients/hour for 1 and 2 and the ratios of pipeline time to bare model time.

    python benchmarks/bench_batch.py --checkpoint demo-data/mprtm-demo.pt --patients 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

from cds.batch.runner import BatchRunner, RunOptions
from cds.config import load_settings
from cds.db.migrate import upgrade
from cds.pipeline import pull
from cds.sources import make_fhir_source, make_imaging_source
from cds.synth.generate import generate
from model.predictor import Predictor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=None, help="cohort folder (default: synthesize one)")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mprtm-bench-batch-"))
    data = Path(args.data) if args.data else work / "cohort"
    if not args.data:
        print(f"synthesizing {args.patients} patients into {data} ...", flush=True)
        generate(args.patients, 123, data, image_size=args.image_size, progress=True)
    meta = json.loads((data / "truth" / "meta.json").read_text())
    as_of_date = dt.date.fromisoformat(str(meta["reference_date"])[:10])
    as_of = dt.datetime.combine(as_of_date, dt.time(23, 0), dt.UTC)
    settings = load_settings(environ={}).replace(
        database__url=f"sqlite:///{work / 'bench.db'}",
        fhir__ndjson_dir=str(data / "fhir"),
        fhir__writeback_path=str(work / "out" / "RiskAssessment.ndjson"),
        pacs__folder=str(data / "dicom"),
        pacs__cache_dir=str(work / "cache"),
        model__checkpoint=str(args.checkpoint),
        model__cpu_threads=args.threads,
        batch__lock_file=str(work / "batch.lock"),
        batch__cohort="all",
        batch__chunk_size=32,
        batch__incremental=False,  # the second run scores everyone again, from cached images
    )
    upgrade(settings.database.url)

    runs = {}
    with BatchRunner(settings) as runner:
        for label, key in (("cold imaging", "bench-cold"), ("cached imaging", "bench-cached")):
            t0 = time.perf_counter()
            summary = runner.run(RunOptions(run_key=key, as_of=as_of, progress=True))
            runs[label] = (time.perf_counter() - t0, summary)
            print(
                f"{label}: {summary.n_done} done, {summary.n_failed} failed, "
                f"stages {json.dumps({k: round(v, 1) for k, v in summary.timings.items()})}"
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
    cold_s, cold = runs["cold imaging"]
    cached_s, cached = runs["cached imaging"]
    rows = {
        "patients": n,
        "series": len(cache),
        "pipeline_cold_s": round(cold_s, 2),
        "pipeline_cached_s": round(cached_s, 2),
        "bare_model_cold_s": round(bare_cold, 2),
        "bare_model_cached_s": round(bare_cached, 2),
        "patients_per_hour_cold": round(3600 * cold.n_done / cold_s),
        "patients_per_hour_cached": round(3600 * cached.n_done / cached_s),
        "ratio_pipeline_to_model_cold": round(cold_s / bare_cold, 2),
        "ratio_pipeline_to_model_cached": round(cached_s / bare_cached, 2),
        "cached_speedup": round(cold_s / cached_s, 2),
    }
    print()
    print(f"{'measure':36s} value")
    for k, v in rows.items():
        print(f"{k:36s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
