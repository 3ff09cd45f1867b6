"""``mprtm listen`` against a real Orthanc: a new LGE study of a patient, stored into the
Orthanc the listener follows (or routed by it to the listener's Storage SCP), re-scores
that patient (prediction, RiskAssessment, SEG/SR in Orthanc); a listener killed in the
middle of a study finishes it after a restart."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from cds.app import create_app
from cds.batch.runner import BatchRunner, RunOptions
from cds.cli import main as cli
from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Patient, Prediction
from cds.listener import Listener
from connectors.pacs.series import not_lge_reason
from tests.batch.conftest import AS_OF, batch_settings, write_config
from tests.batch.test_batch_pacs_results import _c_find
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.pacs.pacs_env import IGNORE_PYNETDICOM_SOCKET_LEAK

WITHIN_S = 60.0


def _split(cohort: Path) -> tuple[str, str, list[Path], list[Path]]:
    """(DICOM PatientID, LGE series UID, that series' files, every other file)."""
    by: dict[str, list[Path]] = {}
    for f in sorted((cohort / "dicom").rglob("*.dcm")):
        by.setdefault(
            str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID), []
        ).append(f)
    for uid, files in by.items():
        if not_lge_reason([pydicom.dcmread(f) for f in files]) is None:
            pid = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
            rest = [f for u, fs in by.items() if u != uid for f in fs]
            return pid, uid, files, rest
    raise AssertionError("the cohort has an LGE series")


def _store(orthanc: OrthancServer, files: list[Path], folder: Path) -> None:
    """C-STORE ``files`` to Orthanc (``mprtm load-dicom`` over a folder of copies)."""
    folder.mkdir(parents=True)
    for k, f in enumerate(files):
        shutil.copy(f, folder / f"{k}.dcm")
    rc = cli(
        [
            "load-dicom",
            str(folder),
            "--pacs",
            f"127.0.0.1:{orthanc.dicom_port}",
            "--called-aet",
            orthanc.aet,
            "--calling-aet",
            "MPRTM",
            "--no-progress",
        ]
    )
    assert rc == 0


def _settings(
    tmp: Path, orthanc: OrthancServer, cohort: Path, ckpt: Path, **kw: object
) -> Settings:
    values: dict[str, object] = dict(
        pacs__source="dimse",
        pacs__host="127.0.0.1",
        pacs__port=orthanc.dicom_port,
        pacs__called_aet=orthanc.aet,
        pacs__calling_aet="MPRTM",
        pacs__retrieve="get",
        pacs__writeback="dimse",
        pacs__writeback_outbox=str(tmp / "outbox"),
        listener__spool_dir=str(tmp / "spool"),
        listener__stable_seconds=3.0,
        listener__poll_interval_s=0.5,
        listener__retry_after_s=1.0,
    )
    values.update(kw)
    return batch_settings(tmp, cohort, ckpt, **values)  # type: ignore[arg-type]


def _latest(s: Settings, fhir_id: str) -> Prediction | None:
    engine = make_engine(s.database.url)
    try:
        with session_scope(session_factory(engine)) as db:
            row = db.scalar(
                select(Prediction)
                .join(Patient)
                .where(Patient.fhir_id == fhir_id)
                .order_by(Prediction.id.desc())
                .limit(1)
            )
            if row is not None:
                db.expunge(row)
            return row
    finally:
        engine.dispose()


def _ra(s: Settings, fhir_id: str) -> dict[str, object]:
    found = {}
    for line in Path(s.fhir.writeback_path).read_text().splitlines():
        ra = json.loads(line)
        if ra["subject"]["reference"] == f"Patient/{fhir_id}":
            found = ra
    return found


def _seg_of(orthanc: OrthancServer, series_uid: str) -> int:
    ids = httpx.post(
        f"{orthanc.http_url}/tools/find",
        auth=orthanc.auth,
        timeout=30,
        json={"Level": "Instance", "Query": {"Modality": "SEG"}, "Expand": True},
    ).json()
    n = 0
    for inst in ids:
        tags = httpx.get(
            f"{orthanc.http_url}/instances/{inst['ID']}/simplified-tags",
            auth=orthanc.auth,
            timeout=30,
        ).json()
        refs = tags.get("ReferencedSeriesSequence") or []
        n += any(r.get("SeriesInstanceUID") == series_uid for r in refs)
    return n


@pytest.fixture()
def study(cohort_dir: Path) -> tuple[str, str, list[Path], list[Path]]:
    """(FHIR patient id, LGE series UID, that series' files, every other file)."""
    mrn, series_uid, lge, rest = _split(cohort_dir)
    for line in (cohort_dir / "fhir" / "Patient.ndjson").read_text().splitlines():
        patient = json.loads(line)
        if any(i.get("value") == mrn for i in patient.get("identifier", [])):
            return str(patient["id"]), series_uid, lge, rest
    raise AssertionError(f"no Patient with identifier {mrn}")


def _score_before(s: Settings, pid: str) -> Prediction:
    """The patient scored by the nightly without any LGE image (the PACS has none yet)."""
    with BatchRunner(s) as runner:
        assert runner.run(RunOptions(as_of=AS_OF, patient_ids=[pid], progress=False)).n_done
    before = _latest(s, pid)
    assert before is not None and before.lge_series_uid is None
    assert "LGE fibrosis burden: no LGE study" in json.dumps(_ra(s, pid))
    assert "**LGE fibrosis burden:** no processed LGE study" in _card(s, pid)
    return before


def _card(s: Settings, pid: str) -> str:
    """The detail of the patient-view card the CDS Hooks service answers now."""
    app = create_app(
        s.replace(cds_hooks__require_jwt=False, server__secret_key="k" * 40, audit__sink="none")
    )
    r = app.test_client().post(
        "/cds-services/mprtm-hf-risk-patient-view",
        json={
            "hook": "patient-view",
            "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/pr-1", "patientId": pid},
        },
    )
    assert r.status_code == 200, r.text
    return "\n".join(str(c.get("detail", "")) for c in r.get_json()["cards"])


def _wait_scored(s: Settings, pid: str, series_uid: str, deadline: float) -> Prediction:
    while time.monotonic() < deadline:
        row = _latest(s, pid)
        if row is not None and row.lge_series_uid == series_uid:
            return row
        time.sleep(0.5)
    raise AssertionError(f"patient {pid} not re-scored with series {series_uid} in time")


@pytest.mark.orthanc
def test_listener_follows_orthanc_and_finishes_a_study_after_a_kill(
    tmp_path: Path,
    cohort_dir: Path,
    checkpoint: Path,
    study: tuple[str, str, list[Path], list[Path]],
) -> None:
    pid, series_uid, lge_files, rest = study
    orthanc = OrthancServer(
        tmp_path / "orthanc", modalities={"MPRTM": ("127.0.0.1", free_port())}
    ).start()
    try:
        _store(orthanc, rest, tmp_path / "rest")
        s = _settings(
            tmp_path,
            orthanc,
            cohort_dir,
            checkpoint,
            listener__mode="orthanc",
            listener__orthanc_url=orthanc.http_url,
            listener__orthanc_username=orthanc.username,
            listener__stable_seconds=6.0,
        )
        before = _score_before(s, pid)

        cfg = write_config(tmp_path / "mprtm.toml", s)
        env = {**os.environ, "MPRTM_LISTENER__ORTHANC_PASSWORD": orthanc.password}
        argv = [sys.executable, "-m", "cds.cli", "--config", str(cfg), "listen"]
        proc = subprocess.Popen(argv, env=env)
        cursor = Path(s.listener.spool_dir) / "orthanc-cursor.json"
        deadline = time.monotonic() + 60
        while not cursor.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cursor.exists(), "the listener started following the feed"
        # the new study arrives in two parts; the listener has read both from the feed
        # and is killed before the study is stable (nothing of it scored yet)
        half = len(lge_files) // 2
        _store(orthanc, lge_files[:half], tmp_path / "part1")
        _store(orthanc, lge_files[half:], tmp_path / "part2")
        end = int(orthanc.rest("GET", "/changes", params={"last": ""}).json()["Last"])
        while json.loads(cursor.read_text())["last"] < end and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        pending = Path(s.listener.spool_dir) / "pending"
        assert len(list(pending.iterdir())) == 1, "the pending study is on disk"
        assert _latest(s, pid).lge_series_uid is None  # type: ignore[union-attr]
        # nothing new arrives; after the restart the study is scored
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, env=env)
        try:
            after = _wait_scored(s, pid, series_uid, t0 + WITHIN_S)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        assert proc.returncode == 0
        assert f"{100 * after.fibrosis_burden:.1f}% of the myocardium" in _card(s, pid)
        assert after.fibrosis_burden is not None
        assert after.probabilities != before.probabilities
        shown = re.search(r"LGE fibrosis burden: ([0-9.]+)%", json.dumps(_ra(s, pid)))
        assert shown and float(shown.group(1)) == pytest.approx(
            100 * after.fibrosis_burden, abs=0.05
        )
        assert _seg_of(orthanc, series_uid) == 1, "the SEG of the new series is in Orthanc"
        assert len(_c_find(orthanc, "SR")) == 1
        assert not any(pending.iterdir()), "the scored study left the spool"
    finally:
        orthanc.stop()


@pytest.mark.orthanc
@IGNORE_PYNETDICOM_SOCKET_LEAK
def test_listener_scp_scores_a_study_routed_by_the_pacs(
    tmp_path: Path,
    cohort_dir: Path,
    checkpoint: Path,
    study: tuple[str, str, list[Path], list[Path]],
) -> None:
    pid, series_uid, lge_files, rest = study
    port = free_port()
    orthanc = OrthancServer(
        tmp_path / "orthanc",
        modalities={"MPRTM": ("127.0.0.1", free_port()), "MPRTM_LISTEN": ("127.0.0.1", port)},
    ).start()
    try:
        _store(orthanc, rest, tmp_path / "rest")
        s = _settings(
            tmp_path,
            orthanc,
            cohort_dir,
            checkpoint,
            listener__mode="scp",
            listener__port=port,
            listener__ae_title="MPRTM_LISTEN",
            pacs__allowed_peers=[orthanc.aet],
        )
        before = _score_before(s, pid)
        with Listener(s) as listener:
            # the PACS's routing rule: the new study goes to the listener's Storage SCP
            _store(orthanc, lge_files, tmp_path / "new")
            oid = httpx.post(
                f"{orthanc.http_url}/tools/lookup", auth=orthanc.auth, content=series_uid
            ).json()[0]["ID"]
            r = httpx.post(
                f"{orthanc.http_url}/modalities/mprtm_listen/store",
                auth=orthanc.auth,
                json={"Resources": [oid], "Synchronous": True},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            # the PACS drops it again: the received files alone are scored
            httpx.delete(f"{orthanc.http_url}/series/{oid}", auth=orthanc.auth).raise_for_status()
            assert listener.tick() == [], "not stable yet"
            assert listener.tick(time.time() + 5) != []
        after = _latest(s, pid)
        assert after is not None and after.lge_series_uid == series_uid
        assert after.fibrosis_burden is not None
        assert after.probabilities != before.probabilities
        assert re.search(r"LGE fibrosis burden: [0-9.]+%", json.dumps(_ra(s, pid)))
        shown = f"**LGE fibrosis burden:** {100 * after.fibrosis_burden:.1f}% of the myocardium"
        assert shown in _card(s, pid)
        assert _seg_of(orthanc, series_uid) == 1
        assert not any((Path(s.listener.spool_dir) / "pending").iterdir())
    finally:
        orthanc.stop()


def test_a_failing_study_never_stops_the_listener_and_the_nightly_lock_is_waited_out(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    from cds.batch.lock import batch_lock

    s = batch_settings(
        tmp_path,
        cohort_dir,
        checkpoint,
        listener__spool_dir=str(tmp_path / "spool"),
        listener__stable_seconds=0.0,
        listener__retry_after_s=0.0,
        listener__max_attempts=2,
    )
    listener = Listener(s)  # not started: studies are put into its spool directly
    try:
        now = time.time()
        listener.spool.note("1.2.3.999", "nobody-has-this-id", now)
        # the nightly holds the cohort's lock: the study waits, no attempt is counted
        with batch_lock(listener.engine, f"mprtm-batch:{s.batch.cohort}", s.batch.lock_file):
            assert listener.tick() == []
        (waiting,) = listener.spool.pending()
        assert waiting.attempts == 0 and "lock" in waiting.error
        # the patient cannot be scored: retried, then moved aside; the loop goes on
        assert listener.tick() == [] and listener.spool.pending()[0].attempts == 1
        assert listener.tick() == [] and listener.spool.pending() == []
        (failed,) = listener.spool.failed()
        assert failed.study_uid == "1.2.3.999" and failed.error
        assert listener.n_failed == 2
    finally:
        listener.close()
