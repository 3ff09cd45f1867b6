"""CDS Hooks latency under load: ``mprtm serve`` (waitress) vs a bare Flask endpoint.

Scenarios, each with ``--callers`` concurrent callers over loopback, every call with its
own ES384 JWT (verified by the server):

* **nightly**: patient-view for patients with a fresh nightly prediction (one DB read,
  no FHIR, no model);
* **on demand**: patient-view for patients without one, with a full prefetch (Patient,
  ~25 Observations, Conditions, MedicationRequests, two notes) scored by a real M-PRTM
  checkpoint (``--checkpoint``, or a small-preset model trained here with the bundled
  MiniLM text encoder), half of the patients with a cached LGE embedding;
* **bare**: a Flask app whose only route returns a constant card, served by waitress with
  the same threads: the floor of "HTTP + JSON + waitress" on this machine.

It prints p50/p95/p99 per scenario and the ratio to the bare endpoint, measured in one run.

    python benchmarks/bench_hooks.py [--callers 20] [--requests 25] [--threads 16]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PV = "mprtm-hf-risk-patient-view"
ISS = "https://bench-ehr.example"
CONSTANT = {
    "cards": [
        {
            "uuid": "6c1f1a52-0000-4000-8000-000000000000",
            "summary": "HF 1-year risk HIGH: 42% all-cause death (nightly 2026-11-29)",
            "indicator": "critical",
            "source": {"label": "M-PRTM heart-failure risk model"},
        }
    ]
}


# -- bare baseline server (run in its own process) ------------------------------------------


def serve_bare(port: int, threads: int) -> None:
    from flask import Flask, jsonify
    from waitress import serve

    app = Flask("bare")

    @app.post("/cds-services/<sid>")
    def card(sid: str) -> Any:
        return jsonify(CONSTANT)

    @app.get("/healthz")
    def health() -> Any:
        return jsonify(status="ok")

    serve(app, host="127.0.0.1", port=port, threads=threads, ident="bare")


# -- data ------------------------------------------------------------------------------------

OBS = [  # (loinc, unit, low, high)
    ("10230-1", "%", 20, 60),
    ("33762-6", "pg/mL", 200, 9000),
    ("8867-4", "/min", 55, 110),
    ("8480-6", "mm[Hg]", 95, 160),
    ("8462-4", "mm[Hg]", 55, 95),
    ("29463-7", "kg", 50, 110),
    ("2160-0", "mg/dL", 0.7, 2.5),
    ("718-7", "g/dL", 9, 16),
    ("2823-3", "mmol/L", 3.4, 5.6),
    ("2951-2", "mmol/L", 128, 146),
    ("6690-2", "10*3/uL", 4, 12),
    ("777-3", "10*3/uL", 120, 400),
    ("4548-4", "%", 5, 9),
]
MEDS = [
    "furosemide 40 mg",
    "bisoprolol 5 mg",
    "sacubitril/valsartan 49/51 mg",
    "spironolactone 25 mg",
    "atorvastatin 40 mg",
    "dapagliflozin 10 mg",
]
NOTE = (
    "Heart failure clinic review. Breathlessness on exertion, NYHA class {nyha}. Ankle "
    "oedema {oedema}. Weight stable. Tolerating current therapy; blood pressure acceptable. "
    "Echo shows reduced ejection fraction. Plan: continue guideline-directed therapy, "
    "review renal function and potassium in two weeks, follow-up in clinic."
)


def prefetch_for(pid: str, rng: random.Random) -> dict[str, Any]:
    today = dt.date.today()

    def entry(r: dict[str, Any]) -> dict[str, Any]:
        return {"resource": r}

    obs = []
    for i in range(25):
        code, unit, lo, hi = OBS[i % len(OBS)]
        day = today - dt.timedelta(days=rng.randint(1, 200))
        obs.append(
            entry(
                {
                    "resourceType": "Observation",
                    "id": f"{pid}-o{i}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": f"{day.isoformat()}T09:00:00Z",
                    "valueQuantity": {
                        "value": round(rng.uniform(lo, hi), 2),
                        "unit": unit,
                        "system": "http://unitsofmeasure.org",
                        "code": unit,
                    },
                }
            )
        )
    conds = [
        entry(
            {
                "resourceType": "Condition",
                "id": f"{pid}-c{i}",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
            }
        )
        for i, code in enumerate(["I50.9", "I10", "E11.9"])
    ]
    meds = [
        entry(
            {
                "resourceType": "MedicationRequest",
                "id": f"{pid}-m{i}",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{pid}"},
                "authoredOn": (today - dt.timedelta(days=30)).isoformat(),
                "medicationCodeableConcept": {"text": name},
            }
        )
        for i, name in enumerate(rng.sample(MEDS, 4))
    ]
    notes = []
    for i in range(2):
        text = NOTE.format(nyha=rng.choice(["II", "III"]), oedema=rng.choice(["mild", "none"]))
        notes.append(
            entry(
                {
                    "resourceType": "DocumentReference",
                    "id": f"{pid}-d{i}",
                    "status": "current",
                    "subject": {"reference": f"Patient/{pid}"},
                    "date": f"{(today - dt.timedelta(days=10 + i)).isoformat()}T10:00:00Z",
                    "content": [
                        {
                            "attachment": {
                                "contentType": "text/plain",
                                "data": base64.b64encode(text.encode()).decode(),
                            }
                        }
                    ],
                }
            )
        )

    def bundle(entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": entries}

    return {
        "patient": {
            "resourceType": "Patient",
            "id": pid,
            "gender": rng.choice(["male", "female"]),
            "birthDate": f"{rng.randint(1935, 1970)}-0{rng.randint(1, 9)}-15",
        },
        "observations": bundle(obs),
        "conditions": bundle(conds),
        "medicationRequests": bundle(meds),
        "medicationStatements": bundle([]),
        "documents": bundle(notes),
        "imagingStudies": bundle([]),
    }


def train_bench_model(out: Path) -> Path:
    from model.config import preset
    from model.train import train_mprtm
    from tests.model.helpers import tiny_cohort

    cfg = preset("small", seg_epochs=1, fusion_epochs=3)
    examples = tiny_cohort(40, seed=3, size=cfg.image_size)
    res = train_mprtm(
        examples, cfg, seed=1, out=out, progress=False, synthetic=True, baselines=False
    )
    return Path(res.path)


def seed_db(db_url: str, checkpoint: Path, n: int) -> tuple[list[str], list[str]]:
    from cds.db import make_engine, migrate, session_factory
    from cds.db.models import ImageFeatureCache, ModelVersion, Patient, Prediction
    from model.checkpoint import file_sha256
    from model.predictor import Predictor
    from model.types import OUTCOMES
    from tests.model.helpers import tiny_cohort

    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    predictor = Predictor.from_checkpoint(checkpoint)
    volume = tiny_cohort(1, seed=11, size=predictor.config.image_size)[0].input.image
    feats = predictor.encode_image(volume)
    nightly = [f"bn-{i}" for i in range(n)]
    on_demand = [f"bo-{i}" for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    with sessions() as s, s.begin():
        mv = ModelVersion(
            name="M-PRTM",
            version=predictor.version,
            checkpoint_sha256=file_sha256(checkpoint),
            checkpoint_path=str(checkpoint),
            synthetic_training_data=True,
        )
        s.add(mv)
        s.flush()
        for i, pid in enumerate(nightly):
            p = Patient(fhir_id=pid)
            s.add(p)
            s.flush()
            for age_h in (26.0, 3.0):
                probs = {o: 0.05 + 0.4 * ((i * 7 + j) % 10) / 10 for j, o in enumerate(OUTCOMES)}
                s.add(
                    Prediction(
                        patient_id=p.id,
                        model_version_id=mv.id,
                        source="batch",
                        created_at=now - dt.timedelta(hours=age_h),
                        as_of=now,
                        probabilities=probs,
                        tiers={o: "high" if v > 0.3 else "low" for o, v in probs.items()},
                        modality_weights={"numeric": 0.5, "text": 0.3, "image": 0.2},
                        fibrosis_burden=0.12,
                    )
                )
        for i, pid in enumerate(on_demand):
            if i % 2 == 0:
                s.add(
                    ImageFeatureCache(
                        series_fingerprint=uuid.uuid4().hex,
                        model_version=predictor.version,
                        patient_fhir_id=pid,
                        study_instance_uid="1.2.826.1",
                        series_instance_uid=f"1.2.826.1.{i}",
                        study_date=(dt.date.today() - dt.timedelta(days=60)).strftime("%Y%m%d"),
                        n_slices=int(volume.shape[0]),
                        embedding=np.asarray(feats.embedding, dtype=np.float32).tobytes(),
                        fibrosis_burden=float(feats.fibrosis_burden),
                    )
                )
    engine.dispose()
    return nightly, on_demand


# -- load ------------------------------------------------------------------------------------


def wait_ready(base: str, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {base} did not start")


def run_load(
    url: str, bodies: list[bytes], tokens: list[str] | None, callers: int
) -> dict[str, Any]:
    per = len(bodies) // callers
    lat: list[float] = []
    kinds: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(callers)

    def caller(k: int) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            for j in range(k * per, (k + 1) * per):
                headers = {"Content-Type": "application/json"}
                if tokens is not None:
                    headers["Authorization"] = f"Bearer {tokens[j]}"
                t0 = time.perf_counter()
                r = client.post(url, content=bodies[j], headers=headers)
                dt_ms = 1000 * (time.perf_counter() - t0)
                kind = "error"
                if r.status_code == 200:
                    summary = (r.json()["cards"] or [{"summary": "no card"}])[0]["summary"]
                    kind = (
                        "on-demand"
                        if "computed now" in summary
                        else "stale"
                        if summary.startswith("Not refreshed")
                        else "nightly"
                        if "nightly" in summary
                        else "info"
                    )
                with lock:
                    lat.append(dt_ms)
                    kinds[kind] = kinds.get(kind, 0) + 1
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = np.percentile(np.array(lat), [50, 95, 99])
    return {
        "n": len(lat),
        "p50": float(q[0]),
        "p95": float(q[1]),
        "p99": float(q[2]),
        "mean": statistics.fmean(lat),
        "rps": len(lat) / wall,
        "answers": kinds,
        "errors": errors[:3],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=20)
    ap.add_argument("--requests", type=int, default=25, help="requests per caller and scenario")
    ap.add_argument("--threads", type=int, default=16, help="waitress threads (both servers)")
    ap.add_argument("--budget-ms", type=int, default=400, help="cds_hooks.time_budget_ms")
    ap.add_argument("--workers", type=int, default=4, help="cds_hooks.workers")
    ap.add_argument("--checkpoint", default="", help="M-PRTM checkpoint (default: train one)")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.threads)
        return 0

    from tests.hooks.served import free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
    else:
        print("training a small-preset benchmark model (MiniLM text encoder) ...", flush=True)
        checkpoint = train_bench_model(tmp / "bench.pt")
    n_patients = max(20, args.callers * 2)
    db_url = f"sqlite:///{tmp / 'bench.db'}"
    nightly, on_demand = seed_db(db_url, checkpoint, n_patients)

    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="bench", alg="ES384", use="sig")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    port, bare_port = free_port(), free_port()
    cfg = tmp / "mprtm.toml"
    cfg.write_text(f"""
[database]
url = "{db_url}"
[model]
checkpoint = "{checkpoint}"
[logging]
level = "WARNING"
[server]
public_url = "http://127.0.0.1:{port}"
[cds_hooks]
base_url = "http://127.0.0.1:{port}"
time_budget_ms = {args.budget_ms}
workers = {args.workers}
[[cds_hooks.trusted_issuers]]
iss = "{ISS}"
jwks_file = "{tmp / "jwks.json"}"
""")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = (tmp / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "--config",
            str(cfg),
            "serve",
            "--port",
            str(port),
            "--threads",
            str(args.threads),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    bare = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(bare_port), "--threads", str(args.threads)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, Any] = {}
    try:
        base, bare_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
        wait_ready(base)
        wait_ready(bare_base)
        url = f"{base}/cds-services/{PV}"
        n = args.callers * args.requests
        rng = random.Random(7)

        def tokens(count: int) -> list[str]:
            now = int(time.time())
            return [
                jwt.encode(
                    {
                        "iss": ISS,
                        "aud": url,
                        "iat": now,
                        "exp": now + 600,
                        "jti": str(uuid.uuid4()),
                    },
                    key,
                    algorithm="ES384",
                    headers={"kid": "bench", "typ": "JWT"},
                )
                for _ in range(count)
            ]

        def hook(pid: str, prefetch: dict[str, Any] | None) -> bytes:
            body: dict[str, Any] = {
                "hook": "patient-view",
                "hookInstance": str(uuid.uuid4()),
                "context": {"userId": "Practitioner/b1", "patientId": pid},
            }
            if prefetch is not None:
                body["prefetch"] = prefetch
            return json.dumps(body).encode()

        od_prefetch = {pid: prefetch_for(pid, rng) for pid in on_demand}
        # warm-up: the model loads in the background at start; wait until it answers
        warm = hook(on_demand[0], od_prefetch[on_demand[0]])
        end = time.monotonic() + 120
        while time.monotonic() < end:
            r = run_load(url, [warm], tokens(1), 1)
            if r["answers"].get("on-demand"):
                break
            time.sleep(0.5)
        run_load(url, [hook(p, None) for p in nightly[:20]], tokens(20), 4)
        run_load(url, [hook(p, od_prefetch[p]) for p in on_demand[:8]], tokens(8), 4)

        bare_bodies = [hook(rng.choice(nightly), None) for _ in range(n)]
        results["bare Flask constant card"] = run_load(
            f"{bare_base}/cds-services/{PV}", bare_bodies, None, args.callers
        )
        results["nightly (fresh result)"] = run_load(
            url, [hook(rng.choice(nightly), None) for _ in range(n)], tokens(n), args.callers
        )
        od = [rng.choice(on_demand) for _ in range(n)]
        results["on demand (no nightly)"] = run_load(
            url, [hook(p, od_prefetch[p]) for p in od], tokens(n), args.callers
        )
        cold = []
        for k, p in enumerate(od):  # a note never seen before: the text encoder runs
            pf = json.loads(json.dumps(od_prefetch[p]))
            doc = pf["documents"]["entry"][0]["resource"]["content"][0]["attachment"]
            text = base64.b64decode(doc["data"]).decode() + f" Review number {k} of {p}."
            doc["data"] = base64.b64encode(text.encode()).decode()
            cold.append(hook(p, pf))
        results["on demand, new note text"] = run_load(url, cold, tokens(n), args.callers)
    finally:
        for proc in (server, bare):
            proc.terminate()
            proc.wait(timeout=15)
        log.close()

    floor = results["bare Flask constant card"]
    print(
        f"\n{args.callers} concurrent callers, {args.requests} requests each per scenario; "
        f"waitress threads={args.threads}, time_budget_ms={args.budget_ms}, "
        f"workers={args.workers}, cpus={os.cpu_count()}"
    )
    print(f"checkpoint: {checkpoint}")
    head = f"{'scenario':<26}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}"
    print(head + f"{'p50 x bare':>11}{'p95 x bare':>11}  answers")
    for name, r in results.items():
        print(
            f"{name:<26}{r['n']:>5}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}"
            f"{r['rps']:>8.1f}{r['p50'] / floor['p50']:>11.1f}{r['p95'] / floor['p95']:>11.1f}"
            f"  {r['answers']}"
        )
        if r["errors"]:
            print(f"   errors: {r['errors']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
