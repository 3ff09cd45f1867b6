"""The demo end to end (issue 9's must-show), shrunk to a small cohort and a tiny model:
the served app answers discovery; a patient-view card's numbers equal the patient's
RiskAssessment in the NDJSON output; the inbox shows that patient's alert."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cds.app import create_app
from cds.config import load_settings
from cds.demo import HOOK_ID, demo_patient, run
from tests.pacs.orthanc_server import free_port

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--epochs=1",
    "--fusion-epochs=3",
    "--set=enc_dims=8,16,16",
    "--set=embed_dim=32",
    "--set=fusion_heads=2",
    "--set=numeric_hidden=16",
    "--set=max_slices=4",
    "--set=text_window=64",
]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "demo-data"
    port = free_port()
    args = [
        "--dir",
        str(root),
        "--patients",
        "30",
        "--image-size",
        "32",
        "--port",
        str(port),
        "--no-serve",
        *[f"--train-arg={a}" for a in TINY],
    ]
    assert run(args) == 0
    assert run(args) == 0  # a second run reuses cohort, model and login
    config = root / "config.toml"
    login = json.loads((root / "demo-login.json").read_text())
    patient = demo_patient(config)
    assert patient, "the demo batch raised at least one alert"
    ras = [json.loads(x) for x in (root / "out" / "RiskAssessment.ndjson").read_text().splitlines()]
    ra = next(r for r in ras if r["subject"]["reference"] == f"Patient/{patient}")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MPRTM_")}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cds.cli", "--config", str(config), "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (
                tmp_path / "serve.log"
            ).read_text()[-2000:]
            time.sleep(0.5)
        services = httpx.get(f"{base}/cds-services", timeout=10).json()["services"]
        assert HOOK_ID in {s["id"] for s in services}
        body = {
            "hook": "patient-view",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/demo", "patientId": patient},
        }
        card = httpx.post(f"{base}/cds-services/{HOOK_ID}", json=body, timeout=30).json()["cards"][
            0
        ]
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    assert "nightly" in card["summary"]
    for pred in ra["prediction"]:
        pct = f"{100 * pred['probabilityDecimal']:.1f}%"
        tier = pred["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
        label_row = [ln for ln in card["detail"].splitlines() if f"| {pct} | {tier} |" in ln]
        assert label_row, f"{pct} {tier} of {pred['outcome']['text']} not in the card"

    # the inbox (demo login) lists that patient's alert
    app = create_app(load_settings(config))
    client = app.test_client()
    page = client.get("/inbox/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post(
        "/inbox/login",
        data={"username": login["user"], "password": login["password"], "csrf_token": token},
    )
    assert r.status_code in (302, 303)
    inbox = client.get("/inbox/", query_string={"patient": patient}).get_data(as_text=True)
    assert f"/inbox/patients/{patient}" in inbox
    everything = client.get("/inbox/", query_string={"per_page": "100"}).get_data(as_text=True)
    assert f"/inbox/patients/{patient}" in everything
    app.extensions["mprtm.engine"].dispose()
