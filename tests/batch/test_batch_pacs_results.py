"""Imaging results written back to a real Orthanc by the batch: one SEG and one SR per
scored LGE series, found by C-FIND, parsed by highdicom, equal to the product's
segmentation and burden, clean under dciodvfy; a second run adds nothing; an unusable
series gets nothing; a PACS that is down loses nothing (the outbox is sent later)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore
from sqlalchemy import delete, select

from cds.batch.runner import BatchRunner, RunOptions
from cds.cli import main as cli
from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import ImageFeatureCache, Patient, Prediction
from cds.imaging_results import BURDEN_CODE
from connectors.pacs.pixels import series_volume
from connectors.pacs.series import order_slices
from connectors.pacs.store import StoreSummary
from connectors.pacs.writeback import Outbox, StowSender
from model.image_branch import select_slices
from model.predictor import Predictor
from tests.batch.conftest import AS_OF, batch_settings
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.pacs.pacs_env import IGNORE_PYNETDICOM_SOCKET_LEAK


def _start(root: Path, cohort: Path) -> OrthancServer:
    server = OrthancServer(root, modalities={"MPRTM": ("127.0.0.1", free_port())}).start()
    rc = cli(
        [
            "load-dicom",
            str(cohort / "dicom"),
            "--pacs",
            f"127.0.0.1:{server.dicom_port}",
            "--called-aet",
            server.aet,
            "--calling-aet",
            "MPRTM",
            "--no-progress",
        ]
    )
    assert rc == 0
    return server


@pytest.fixture(scope="module")
def orthanc(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = _start(tmp_path_factory.mktemp("orthanc-results"), cohort_dir)
    yield server
    server.stop()


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
    )
    values.update(kw)
    return batch_settings(tmp, cohort, ckpt, **values)  # type: ignore[arg-type]


def _c_find(orthanc: OrthancServer, modality: str) -> list[Dataset]:
    """Series of ``modality`` in Orthanc, by C-FIND (Study Root, SERIES level)."""
    ae = AE(ae_title="MPRTM")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.Modality = modality
    q.SeriesInstanceUID = ""
    q.StudyInstanceUID = ""
    q.PatientID = ""
    found = []
    for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
        if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
            found.append(ident)
    assoc.release()
    return found


def _instances(orthanc: OrthancServer, modality: str, out: Path) -> list[Path]:
    """Every instance of ``modality``, downloaded as files."""
    ids = httpx.post(
        f"{orthanc.http_url}/tools/find",
        auth=orthanc.auth,
        timeout=30,
        json={"Level": "Instance", "Query": {"Modality": modality}},
    ).json()
    paths = []
    for k, iid in enumerate(ids):
        r = httpx.get(f"{orthanc.http_url}/instances/{iid}/file", auth=orthanc.auth, timeout=30)
        r.raise_for_status()
        paths.append(out / f"{modality}-{k}.dcm")
        paths[-1].write_bytes(r.content)
    return paths


def _n_instances(orthanc: OrthancServer) -> int:
    stats = httpx.get(f"{orthanc.http_url}/statistics", auth=orthanc.auth, timeout=30).json()
    return int(stats["CountInstances"])


def _burden(sr: Dataset) -> float:
    found: list[float] = []

    def walk(items: object) -> None:
        for item in items or []:  # type: ignore[attr-defined]
            seq = item.get("ConceptNameCodeSequence")
            if seq and seq[0].CodeValue == BURDEN_CODE.value:
                found.append(float(item.MeasuredValueSequence[0].NumericValue))
            walk(item.get("ContentSequence"))

    walk(sr.ContentSequence)
    assert len(found) == 1
    return found[0]


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy missing: apt-get install dicom3tools (.ci/apt-packages.txt)"
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def _source_series(cohort: Path, series_uid: str) -> list[Dataset]:
    files = [
        f
        for f in (cohort / "dicom").rglob("*.dcm")
        if str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) == series_uid
    ]
    ordered, _ = order_slices([pydicom.dcmread(f) for f in files])
    return ordered


@pytest.mark.orthanc
def test_batch_writes_one_seg_and_one_sr_per_scored_lge_series(
    tmp_path: Path, orthanc: OrthancServer, cohort_dir: Path, checkpoint: Path
) -> None:
    s = _settings(tmp_path, orthanc, cohort_dir, checkpoint)
    with BatchRunner(s) as runner:
        first = runner.run(RunOptions(as_of=AS_OF, progress=False))
    assert first.n_failed == 0
    engine = make_engine(s.database.url)
    with session_scope(session_factory(engine)) as db:
        scored = {c.series_instance_uid for c in db.scalars(select(ImageFeatureCache)) if c.usable}
        preds = {
            p.lge_series_uid: (p.fibrosis_burden, pid)
            for p, pid in db.execute(select(Prediction, Patient.fhir_id).join(Patient))
            if p.lge_series_uid
        }
    assert scored, "the cohort has LGE series"
    segs, srs = _c_find(orthanc, "SEG"), _c_find(orthanc, "SR")
    assert len(segs) == len(srs) == len(scored)
    assert not list((tmp_path / "outbox").glob("*.dcm")), "everything was stored"

    notes = {}
    for line in Path(s.fhir.writeback_path).read_text().splitlines():
        ra = json.loads(line)
        notes[ra["subject"]["reference"].removeprefix("Patient/")] = ra["note"][0]["text"]
    predictor = Predictor.from_checkpoint(str(checkpoint), device="cpu", threads=1)
    size = predictor.config.input_size
    seg_files = _instances(orthanc, "SEG", tmp_path)
    for path in seg_files:
        assert _dciodvfy_errors(path) == []
        seg = hd.seg.segread(path)
        source_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
        assert source_uid in scored
        # the product's segmentation of the same series
        ordered = _source_series(cohort_dir, source_uid)
        volume = series_volume(ordered, size)
        labels = predictor.encode_image(volume.image, volume.pixel_spacing_mm).segmentation
        assert labels is not None
        kept = select_slices(len(ordered), labels.shape[0])
        uids = [str(ordered[i].SOPInstanceUID) for i in kept]
        enh = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[2])[
            ..., 0
        ]
        # source pixel j sits on model pixel floor((j + 0.5) * size / n) (aligned centres;
        # the synthetic slices are square, so there is no padding)
        n = int(ordered[0].Rows)
        assert int(ordered[0].Columns) == n
        idx = np.floor((np.arange(n) + 0.5) * size / n).astype(int)
        expected = (labels == 2)[:, idx][:, :, idx]
        assert enh.shape == expected.shape and enh.any() == expected.any()
        assert np.array_equal(enh, expected.astype(enh.dtype))
    for path in _instances(orthanc, "SR", tmp_path):
        assert _dciodvfy_errors(path) == []
        sr = hd.sr.srread(path)
        source_uid = str(
            sr.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .SeriesInstanceUID
        )
        series_uids = {
            str(r.SeriesInstanceUID)
            for e in sr.CurrentRequestedProcedureEvidenceSequence
            for r in e.ReferencedSeriesSequence
        }
        source_uid = next(u for u in series_uids if u in preds)
        burden, pid = preds[source_uid]
        value = _burden(sr)
        assert value == pytest.approx(round(100 * burden, 4), abs=1e-6)
        shown = re.search(r"LGE fibrosis burden: ([0-9.]+)%", notes[pid])
        assert shown and float(shown.group(1)) == pytest.approx(value, abs=0.05 + 1e-9)

    # a second run, and a re-run after the image cache was cleared, add nothing
    n = _n_instances(orthanc)
    with BatchRunner(s) as runner:
        assert runner.run(RunOptions(as_of=AS_OF, progress=False, run_key="again")).n_failed == 0
    with session_scope(session_factory(engine)) as db:
        db.execute(delete(ImageFeatureCache))
    with BatchRunner(s) as runner:
        assert runner.run(RunOptions(as_of=AS_OF, progress=False, run_key="fresh")).n_failed == 0
    engine.dispose()
    assert _n_instances(orthanc) == n
    assert len(_c_find(orthanc, "SEG")) == len(segs)


@pytest.mark.orthanc
@IGNORE_PYNETDICOM_SOCKET_LEAK  # refused associations to the port that is down
def test_unusable_series_get_nothing_and_a_down_pacs_loses_nothing(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    for sub in ("gated", "down"):
        (tmp_path / sub).mkdir()
    pacs = _start(tmp_path / "orthanc", cohort_dir)
    try:
        # the default quality gate refuses the tiny model's segmentations: nothing written
        gated = _settings(
            tmp_path / "gated",
            pacs,
            cohort_dir,
            checkpoint,
            gate="default",
            pacs__writeback="dicomweb",
            pacs__dicomweb_url=pacs.dicomweb_url,
            pacs__dicomweb_auth="basic",
            pacs__dicomweb_username=pacs.username,
            pacs__dicomweb_password=pacs.password,
        )
        with BatchRunner(gated) as runner:
            summary = runner.run(RunOptions(as_of=AS_OF, progress=False))
        assert summary.n_image_unusable > 0 and summary.n_failed == 0
        assert _c_find(pacs, "SEG") == [] and _c_find(pacs, "SR") == []

        # the write-back target is down: every patient is still scored, results wait
        # (images from the DICOM folder, results to a port nobody listens on)
        tmp = tmp_path / "down"
        down = batch_settings(
            tmp,
            cohort_dir,
            checkpoint,
            pacs__writeback="dimse",
            pacs__port=free_port(),
            pacs__max_retries=0,
            pacs__writeback_outbox=str(tmp / "outbox"),
        )
        with BatchRunner(down) as runner:
            summary = runner.run(RunOptions(as_of=AS_OF, progress=False))
        assert summary.n_failed == 0 and summary.n_done > 0
        waiting = list((tmp_path / "down" / "outbox").glob("*.dcm"))
        assert waiting and _c_find(pacs, "SEG") == []
        # the PACS is back (here over STOW-RS): the outbox drains
        sender = StowSender(
            pacs.dicomweb_url, auth="basic", username=pacs.username, password=pacs.password
        )
        outbox = Outbox(tmp_path / "down" / "outbox", sender)
        result: StoreSummary = outbox.flush()
        outbox.close()
        assert result.sent == len(waiting) and not result.failures
        assert not outbox.pending()
        assert len(_c_find(pacs, "SEG")) == len(_c_find(pacs, "SR")) == len(waiting) // 2
    finally:
        pacs.stop()
