"""``GET /metrics``: audit counters and the database metrics in the Prometheus text
format, answered to loopback and to ``[server] metrics_allow`` networks only."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cds.app import create_app
from cds.config import RegistrySettings, Settings
from cds.db import session_factory, session_scope
from cds.db.models import BatchRun
from cds.registry import bootstrap, promote, register


def _app(settings: Settings, allow: tuple[str, ...] = ()) -> object:
    s = dataclasses.replace(
        settings,
        server=dataclasses.replace(settings.server, secret_key="k" * 40, metrics_allow=allow),
    )
    return create_app(s, TESTING=True)


def test_metrics_content_and_access(
    migrated_settings: Settings, checkpoint: Path, other_checkpoint: Path
) -> None:
    settings = migrated_settings.replace(model__checkpoint=str(checkpoint))
    app = _app(settings)
    with session_scope(session_factory(app.extensions["mprtm.engine"])) as db:  # type: ignore[attr-defined]
        bootstrap(db, settings)
        shadow = register(db, other_checkpoint, actor="t")
        promote(db, shadow.id, "shadow", limits=RegistrySettings(), actor="t")
        now = dt.datetime.now(dt.UTC)
        db.add(BatchRun(run_key="k1", run_date=now.date(), status="completed", cohort="all",
                        n_total=5, n_done=4, n_failed=1, finished_at=now,
                        timings={"total": 12.5}))  # fmt: skip
    client = app.test_client()  # type: ignore[attr-defined]
    got = client.get("/metrics")
    assert got.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(got.get_data(as_text=True))}
    assert all(name.startswith("mprtm_") for name in families)
    runs = {s.labels["status"]: s.value for s in families["mprtm_batch_runs"].samples
            if s.name == "mprtm_batch_runs_total"}  # fmt: skip
    assert runs == {"completed": 1.0}
    patients = {
        s.labels["status"]: s.value for s in families["mprtm_batch_last_run_patients"].samples
    }
    assert patients == {"done": 4.0, "failed": 1.0}
    assert families["mprtm_batch_last_run_duration_seconds"].samples[0].value == 12.5
    states = {
        s.labels["state"]: s.labels["version"] for s in families["mprtm_model_version_info"].samples
    }
    assert set(states) == {"active", "shadow"} and states["shadow"] == shadow.version
    assert "mprtm_audit_queue_depth" in families
    # another client: refused unless its network is listed
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    allowed = _app(settings, ("10.1.0.0/16",)).test_client()  # type: ignore[attr-defined]
    assert allowed.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert allowed.get("/metrics", environ_base={"REMOTE_ADDR": "10.2.0.1"}).status_code == 403
