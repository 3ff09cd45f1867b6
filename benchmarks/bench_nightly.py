"""The incremental nightly against a cold one, measured in one run.

On the embedded default (NDJSON folder, DICOM folder, SQLite, RiskAssessments to NDJSON,
local executor) and one synthetic cohort:

1. night 1 (cold): every patient is pulled, mapped, encoded and scored;
2. a fraction ``--changed`` of the patients gets new data: half a new Observation (a
   copy of one of theirs, dated the day before the as-of time, value changed), half a new
   clinical note (a copy of one of theirs, dated likewise);
3. night 2 (incremental): every patient is pulled and mapped again; only those whose
   input fingerprint changed are scored.

Each night opens its own runner (the model load and the NDJSON indexing are in both
timings).  The last line is one JSON object: ``cold_s``, ``incremental_s``, ``ratio``
(incremental / cold), ``written_cold``, ``written_incremental`` (RiskAssessments written
by each night), ``changed`` (patients given new data) and ``unchanged``.

    python benchmarks/bench_nightly.py --patients 2000 --changed 0.05 --threads 1

Without ``--checkpoint`` a randomly initialised ``small`` network with the bundled MiniLM
text encoder is used (timing does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path

from bench_inference import _random_checkpoint

from cds.batch.runner import BatchRunner, RunOptions
from cds.config import load_settings
from cds.db.migrate import upgrade
from cds.synth.generate import generate


def _n_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _give_new_data(fhir: Path, patients: list[str], when: dt.datetime) -> None:
    """Half of ``patients`` get a new Observation, the other half a new note."""
    half = len(patients) // 2
    for resource, group in (
        ("Observation", patients[:half]),
        ("DocumentReference", patients[half:]),
    ):
        wanted = {f"Patient/{p}" for p in group}
        added = []
        for line in (fhir / f"{resource}.ndjson").read_text().splitlines():
            res = json.loads(line)
            ref = res.get("subject", {}).get("reference")
            if ref not in wanted:
                continue
            if resource == "Observation":
                if "valueQuantity" not in res:
                    continue
                res["valueQuantity"]["value"] = float(res["valueQuantity"]["value"]) * 1.3 + 1
                res.pop("effectivePeriod", None)
                res["effectiveDateTime"] = when.isoformat()
            else:
                res["date"] = when.isoformat()
            res["id"] = f"bench-new-{len(added)}-{res['id']}"
            added.append(json.dumps(res))
            wanted.discard(ref)
        with (fhir / f"{resource}.ndjson").open("a", encoding="utf-8") as f:
            f.write("".join(a + "\n" for a in added))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--changed", type=float, default=0.05, help="fraction given new data")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mprtm-bench-nightly-"))
    data = work / "cohort"
    print(f"synthesizing {args.patients} patients into {data} ...", flush=True)
    generate(args.patients, 123, data, image_size=args.image_size, progress=False)
    checkpoint = args.checkpoint or str(_random_checkpoint(work))
    meta = json.loads((data / "truth" / "meta.json").read_text())
    as_of_date = dt.date.fromisoformat(str(meta["reference_date"])[:10])
    as_of = dt.datetime.combine(as_of_date, dt.time(23, 0), dt.UTC)
    ra_path = work / "out" / "RiskAssessment.ndjson"
    settings = load_settings(environ={}).replace(
        database__url=f"sqlite:///{work / 'bench.db'}",
        fhir__ndjson_dir=str(data / "fhir"),
        fhir__writeback_path=str(ra_path),
        pacs__folder=str(data / "dicom"),
        pacs__cache_dir=str(work / "cache"),
        model__checkpoint=checkpoint,
        model__cpu_threads=args.threads,
        batch__lock_file=str(work / "batch.lock"),
        batch__cohort="all",
        batch__chunk_size=32,
    )
    upgrade(settings.database.url)

    def night(day: int) -> tuple[float, int, object]:
        before = _n_lines(ra_path)
        opts = RunOptions(run_date=as_of_date + dt.timedelta(days=day), as_of=as_of, progress=False)
        t0 = time.perf_counter()
        with BatchRunner(settings) as runner:
            summary = runner.run(opts)
        return time.perf_counter() - t0, _n_lines(ra_path) - before, summary

    cold_s, written_cold, cold = night(0)
    print(f"night 1: {cold.as_dict()}", flush=True)  # type: ignore[attr-defined]
    ids = sorted(json.loads(x)["id"] for x in (data / "fhir" / "Patient.ndjson").open())
    changed = random.Random(7).sample(ids, max(2, round(args.changed * len(ids))))
    _give_new_data(data / "fhir", changed, as_of - dt.timedelta(days=1))
    inc_s, written_inc, inc = night(1)
    print(f"night 2: {inc.as_dict()}", flush=True)  # type: ignore[attr-defined]
    print(
        json.dumps(
            {
                "patients": len(ids),
                "changed": len(changed),
                "unchanged": inc.n_unchanged,  # type: ignore[attr-defined]
                "cold_s": round(cold_s, 2),
                "incremental_s": round(inc_s, 2),
                "ratio": round(inc_s / cold_s, 3),
                "written_cold": written_cold,
                "written_incremental": written_inc,
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
