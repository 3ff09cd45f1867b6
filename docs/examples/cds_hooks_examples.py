"""Write the example discovery document, request and response of docs/cds-hooks.md.

    python docs/examples/cds_hooks_examples.py

Runs the real service (the app factory, a fresh SQLite database migrated to head, two
nightly predictions and a cached LGE study for one synthetic patient) and saves what it
answers next to this script.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from cds.app import create_app  # noqa: E402
from cds.config import Settings  # noqa: E402
from cds.db import migrate  # noqa: E402
from cds.db.models import ImageFeatureCache, ModelVersion, Patient, Prediction  # noqa: E402
from cds.scoring import StoredInput, StoredInputs  # noqa: E402

OUT = Path(__file__).resolve().parent


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="hooks-example-"))
    url = f"sqlite:///{tmp / 'example.db'}"
    migrate.upgrade(url)
    settings = Settings().replace(
        database__url=url,
        server__public_url="https://mprtm.hospital.example",
        cds_hooks__base_url="https://mprtm.hospital.example",
        cds_hooks__require_jwt=False,  # the example shows bodies; JWTs are in the doc
    )
    app = create_app(settings)
    now = dt.datetime.now(dt.UTC)

    def day(days_ago: int) -> str:
        return (now - dt.timedelta(days=days_ago)).date().isoformat()
    with app.extensions["mprtm.sessions"]() as s, s.begin():
        mv = ModelVersion(name="M-PRTM", version="mprtm-3f2a9c1d04be",
                          checkpoint_sha256="3f2a9c1d04be" + "0" * 52,
                          checkpoint_path="checkpoints/mprtm-demo.pt",
                          synthetic_training_data=True)
        patient = Patient(fhir_id="hf-0042")
        s.add_all([mv, patient])
        s.flush()
        for age_h, p in ((26, 0.24), (3, 0.31)):
            probs = {"death": p, "cv_death": p * 0.7, "rehospitalization": p + 0.12,
                     "cardiology_rehospitalization": p + 0.05, "macce": p + 0.08}
            s.add(Prediction(
                patient_id=patient.id, model_version_id=mv.id, source="batch",
                created_at=now - dt.timedelta(hours=age_h), as_of=now,
                probabilities=probs,
                tiers={o: "high" if v >= 0.3 else "moderate" for o, v in probs.items()},
                modality_weights={"numeric": 0.46, "text": 0.21, "image": 0.33},
                # reference (typical patients) + the three contributions = the probability
                contributions={o: {"reference": 0.18 * v / p, "numeric": 0.6 * (v - 0.18 * v / p),
                                   "text": 0.1 * (v - 0.18 * v / p),
                                   "image": 0.3 * (v - 0.18 * v / p)}
                               for o, v in probs.items()},
                fibrosis_burden=0.174,
                inputs=StoredInputs((
                    StoredInput("nt_probnp", "lab", 2450.0, "pg/mL", day(6), "Observation/bnp-9"),
                    StoredInput("med_beta_blocker", "medication", 1.0, "", day(20),
                                "MedicationRequest/mr-3"),
                    StoredInput("DocumentReference/note-7", "note", None, "", day(6),
                                "DocumentReference/note-7"),
                    StoredInput("lge_series", "lge", 10.0, "slices", day(420),
                                "1.2.826.0.1.3680043.9.1.7"),
                )).to_json()))
        s.add(ImageFeatureCache(
            series_fingerprint=uuid.uuid4().hex, model_version=mv.version,
            patient_fhir_id="hf-0042", study_instance_uid="1.2.826.0.1.3680043.9.1",
            series_instance_uid="1.2.826.0.1.3680043.9.1.7",
            study_date=(now - dt.timedelta(days=420)).strftime("%Y%m%d"), n_slices=10,
            embedding=b"\0" * 16, fibrosis_burden=0.174))
    client = app.test_client()
    discovery = client.get("/cds-services").get_json()
    request = {
        "hook": "encounter-discharge",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.hospital.example/fhir/R4",
        "fhirAuthorization": {"access_token": "opaque-token-from-the-ehr",
                              "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/Patient.read user/Observation.read",
                              "subject": "mprtm-cds"},
        "context": {"userId": "Practitioner/pr-17", "patientId": "hf-0042",
                    "encounterId": "enc-9001"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": "hf-0042",
                                 "gender": "female", "birthDate": "1948-05-02"}},
    }
    response = client.post("/cds-services/mprtm-hf-risk-discharge", json=request).get_json()
    app.extensions["mprtm.hooks"].engine.close()
    for name, body in (("discovery", discovery), ("request", request), ("response", response)):
        (OUT / f"cds-hooks-{name}.json").write_text(json.dumps(body, indent=2) + "\n")
    print(f"wrote {OUT}/cds-hooks-{{discovery,request,response}}.json")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
