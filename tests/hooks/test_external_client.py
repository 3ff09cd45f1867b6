"""An external CDS Hooks client against ``mprtm serve``: healthchain's SandboxClient.

healthchain pins versions that clash with this project, so it lives in a virtual
environment of its own (``.ci/setup.d/40-healthchain.sh`` makes ``.venv-healthchain``;
``MPRTM_HEALTHCHAIN_PYTHON`` points elsewhere).  Its client sends no JWT, so the server
runs with ``require_jwt = false``, the explicit local-demo setting.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from cds.db import make_engine, session_factory
from cds.db.models import CardFeedback
from tests.hooks.helpers import add_prediction
from tests.hooks.served import REPO, free_port, serve, write_config

HC_PYTHON = Path(
    os.environ.get("MPRTM_HEALTHCHAIN_PYTHON", REPO / ".venv-healthchain" / "bin" / "python")
)

pytestmark = pytest.mark.skipif(
    not HC_PYTHON.exists(),
    reason=f"healthchain venv not found at {HC_PYTHON} (run .ci/setup.d/40-healthchain.sh)",
)


def test_healthchain_sandbox_client(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    add_prediction(sessions, "hc-p1", age_hours=2, p_death=0.45)
    port = free_port()
    cfg = write_config(tmp_path / "mprtm.toml", db_url, port=port, require_jwt=False)
    with serve(cfg, port) as base:
        proc = subprocess.run(
            [str(HC_PYTHON), str(Path(__file__).with_name("healthchain_client.py")), base, "hc-p1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["discovered"] == ["mprtm-hf-risk-discharge", "mprtm-hf-risk-patient-view"]
    for hook in ("patient-view", "encounter-discharge"):
        [card] = out[hook]
        assert card["indicator"] == "critical" and "45%" in card["summary"]
        assert card["selectionBehavior"] == "any"
    assert out["patient-view:sandbox_got_cards"] is True
    # healthchain drops context.encounterId (see healthchain_client.py): refused with 400
    assert out["encounter-discharge:sandbox_got_cards"] is False
    assert out["feedback_status"] == 200
    with sessions() as s:
        fb = s.scalars(select(CardFeedback)).one()
    assert fb.patient_fhir_id == "hc-p1" and fb.override_comment == "external client test"
    engine.dispose()
