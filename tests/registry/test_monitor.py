"""``mprtm monitor`` on real nightly runs: a model trained on one simulated site, a night
on the same patients, then a night on the same patients measured with an NT-proBNP assay
that reads twice as high (``assay.nt_probnp=2.0``; a 1.3-fold shift is within sampling
noise at 300 patients, see docs/model-lifecycle.md): only NT-proBNP's PSI crosses, the
command exits 4 and exactly one admin alert is raised (a second check of the same run
raises none)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import select

from cds.app import create_app
from cds.batch.runner import BatchRunner, RunOptions
from cds.cli import main
from cds.config import load_settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import AdminAlert, MonitorResult, Prediction
from cds.model_data import cause_classes, load_model_examples
from cds.monitor import check, psi, read_labels
from cds.synth.generate import generate
from cds.synth.shifts import parse_shifts
from cds.users import add_user
from model.train import train_mprtm
from tests.batch.conftest import AS_OF, batch_settings, write_config
from tests.inbox.conftest import login
from tests.model.helpers import tiny_config, write_tiny_bert

N = 300


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("monitor")
    base = root / "base"
    shifted = root / "shifted"
    generate(N, 5, base, images=False, progress=False)
    generate(N, 5, shifted, images=False, progress=False,
             shifts=parse_shifts(["assay.nt_probnp=2.0"]))  # fmt: skip
    for folder in (base, shifted):
        (folder / "dicom").mkdir(exist_ok=True)  # no images: an empty DICOM folder
    bert = write_tiny_bert(root / "bert")
    examples = load_model_examples(base, 32, load_settings(environ={}), progress=False)
    cfg = tiny_config(bert, max_slices=4, causes=cause_classes(examples))
    res = train_mprtm(examples, cfg, seed=3, out=root / "m.pt", progress=False,
                      synthetic=True, baselines=False)  # fmt: skip
    return {"base": base, "shifted": shifted, "ckpt": Path(res.path), "root": root}


def test_psi_of_identical_and_shifted_samples() -> None:
    edges = [float(x) for x in range(1, 10)]
    same = [x + 0.5 for x in range(10)] * 3
    assert psi(same, edges, [0.1] * 10) == pytest.approx(0.0)
    assert psi([x + 2.0 for x in same], edges, [0.1] * 10) > 1.0
    # a detection limit: 40 % of the values on one number, equal shares no longer apply
    floor = [5.0] * 4 + [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert psi(floor, [5.0, 6.0, 8.0, 10.0], [0.0, 0.4, 0.2, 0.2, 0.2]) == pytest.approx(0.0)


@pytest.mark.slow
def test_assay_shift_is_caught_once(
    site: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # every patient is scored both nights (the second night's drift is measured on all)
    s = batch_settings(tmp_path, site["base"], site["ckpt"], batch__cohort="all",
                       monitoring__min_patients=20, batch__incremental=False)  # fmt: skip
    with BatchRunner(s) as runner:
        night1 = runner.run(RunOptions(as_of=AS_OF, progress=False, run_date=dt.date(2026, 11, 2)))
    assert night1.n_done == N
    monkeypatch.setenv("MPRTM_CONFIG", str(write_config(tmp_path / "c.toml", s)))
    assert main(["monitor", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    sig = {x["name"]: x for x in first["versions"][0]["signals"]}
    base_psi = sig["psi:nt_probnp"]["value"]
    assert base_psi < s.monitoring.psi_max

    shifted = s.replace(fhir__ndjson_dir=str(site["shifted"] / "fhir"))
    with BatchRunner(shifted) as runner:
        night2 = runner.run(RunOptions(as_of=AS_OF, progress=False, run_date=dt.date(2026, 11, 3)))
    assert night2.n_done == N
    assert main(["monitor", "--json"]) == 4
    second = json.loads(capsys.readouterr().out)
    report = second["versions"][0]
    sig = {x["name"]: x for x in report["signals"]}
    print("PSI nt_probnp: unshifted", base_psi, "shifted", sig["psi:nt_probnp"]["value"])
    assert [c for c in report["crossed"] if c.startswith(("psi:", "missing:"))] == ["psi:nt_probnp"]
    assert main(["monitor"]) == 4  # the same run again: no second alert
    capsys.readouterr()
    with session_scope(session_factory(make_engine(s.database.url))) as db:
        alerts = db.scalars(select(AdminAlert)).all()
        assert len(alerts) == 1 and "psi:nt_probnp" in alerts[0].message
        assert alerts[0].run_id == night2.run_id
        assert len(db.scalars(select(MonitorResult)).all()) == 3
    # realised performance: the nights' predictions once a year old, joined with labels
    labels = read_labels(site["base"] / "truth" / "labels.csv", "death")
    with session_scope(session_factory(make_engine(s.database.url))) as db:
        young = check(db, s, run_id=night2.run_id, labels=labels, now=AS_OF + dt.timedelta(100))
        old = check(db, s, run_id=night2.run_id, labels=labels, now=AS_OF + dt.timedelta(366))
        latest = {  # each patient's latest prediction of the month: night 2's
            p.patient.fhir_id: p.probabilities["death"]
            for p in db.scalars(select(Prediction).where(Prediction.run_id == night2.run_id))
        }
    assert not [x for x in young[0]["signals"] if x["kind"] == "performance"]
    perf = {x["name"]: x for x in old[0]["signals"] if x["kind"] == "performance"}
    auc = perf[f"realised_auroc:{AS_OF:%Y-%m}"]
    ids = [pid for pid in latest if pid in labels]
    assert auc["n"] == len(ids) >= 100
    expected = roc_auc_score([labels[i] for i in ids], [latest[i] for i in ids])
    assert auc["value"] == pytest.approx(expected, abs=1e-9)
    assert f"realised_ece:{AS_OF:%Y-%m}" in perf and f"realised_citl:{AS_OF:%Y-%m}" in perf

    # the admin monitoring page, from what the monitor stored
    app = create_app(
        dataclasses.replace(s, server=dataclasses.replace(s.server, secret_key="k" * 40)),
        TESTING=True,
    )
    with session_scope(session_factory(app.extensions["mprtm.engine"])) as db:
        add_user(db, "root-admin", "admin", "correct horse battery")
    client = app.test_client()
    assert login(client, "root-admin", "correct horse battery").status_code == 302
    page = client.get("/inbox/admin/monitoring").get_data(as_text=True)
    assert f"run {night2.run_id}: " in page and "psi:nt_probnp" in page
    assert '<strong class="badge">' in page  # the crossed value is marked
    app.extensions["mprtm.engine"].dispose()
