"""Drive the CDS service with healthchain's sandbox client (an external CDS Hooks client).

Run with the interpreter of a separate virtual environment that has ``healthchain``
installed (its dependency pins clash with this project's): ``python healthchain_client.py
BASE_URL PATIENT_ID``.  Prints one JSON object; exits non-zero when healthchain's own
models reject a response.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import httpx
from healthchain.models.responses.cdsdiscovery import CDSServiceInformation
from healthchain.models.responses.cdsresponse import CDSResponse
from healthchain.sandbox.requestconstructors import CdsRequestConstructor
from healthchain.sandbox.sandboxclient import SandboxClient
from healthchain.sandbox.workflows import Workflow

SERVICES = {
    "patient-view": "mprtm-hf-risk-patient-view",
    "encounter-discharge": "mprtm-hf-risk-discharge",
}


def main(base: str, patient_id: str) -> int:
    out: dict[str, object] = {}
    discovery = httpx.get(f"{base}/cds-services", timeout=10).json()
    info = CDSServiceInformation(**discovery)
    out["discovered"] = sorted(s.id for s in info.services)
    prefetch = {"patient": {"resourceType": "Patient", "id": patient_id, "gender": "male"}}
    for hook, service_id in SERVICES.items():
        workflow = Workflow(hook)
        url = f"{base}/cds-services/{service_id}"
        client = SandboxClient(url=url, workflow=workflow)
        context = {"patientId": patient_id, "userId": "Practitioner/hc-1"}
        if hook == "encounter-discharge":
            context["encounterId"] = "hc-enc-1"
        request = CdsRequestConstructor().construct_request(
            prefetch_data=prefetch, workflow=workflow, context=context
        )
        client.requests.append(request)
        [raw] = client.send_requests()
        out[f"{hook}:sandbox_got_cards"] = bool(raw.get("cards"))
        if not raw.get("cards"):
            # healthchain 0.16.1 types CDSRequest.context as its base context class, so
            # pydantic drops encounterId when the sandbox serialises an encounter-discharge
            # request; the service answers such a request 400 (encounterId is REQUIRED).
            # Send the same request serialised with every context field.
            body = request.model_dump(mode="json", exclude_none=True, serialize_as_any=True)
            resp = httpx.post(url, json=body, timeout=10)
            resp.raise_for_status()
            raw = resp.json()
        # healthchain 0.16.1's Link model declares "autoLaunchable: Optional[bool]" without a
        # default, i.e. required; CDS Hooks 2.0 names it "autolaunchable" and makes it
        # OPTIONAL, so spec-conformant links lack it.  Fill in its "not given" value and
        # validate everything else strictly.
        for card in raw["cards"]:
            for link in card.get("links", []):
                link.setdefault("autoLaunchable", None)
        response = CDSResponse.model_validate(raw)  # strict: raises on a bad card
        out[hook] = [c.model_dump(mode="json", exclude_none=True) for c in response.cards]
    card = out["patient-view"][0]  # type: ignore[index]
    fb = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": card["overrideReasons"][0],
                    "userComment": "external client test",
                },
                "outcomeTimestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ]
    }
    r = httpx.post(f"{base}/cds-services/{SERVICES['patient-view']}/feedback", json=fb, timeout=10)
    out["feedback_status"] = r.status_code
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
