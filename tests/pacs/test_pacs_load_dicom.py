"""``mprtm load-dicom`` against Orthanc: everything sendable is stored, each failure is
reported by file name with its reason, and a refused association ends cleanly."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest

from cds.cli import main as cli_main
from tests.pacs.dicom_data import write_patient
from tests.pacs.orthanc_server import free_port
from tests.pacs.pacs_env import IGNORE_PYNETDICOM_SOCKET_LEAK, Pacs

pytestmark = pytest.mark.orthanc


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "mprtm.toml"
    cfg.write_text("[pacs]\nmax_retries = 2\nretry_backoff_s = 0.01\nassoc_timeout_s = 15.0\n")
    return cfg


def _run(tmp_path: Path, folder: Path, port: int, aet: str = "ORTHANC") -> int:
    return cli_main(
        [
            "--config",
            str(_config(tmp_path)),
            "load-dicom",
            str(folder),
            "--pacs",
            f"127.0.0.1:{port}",
            "--called-aet",
            aet,
            "--no-progress",
        ]
    )


def test_load_dicom_stores_the_rest_and_lists_failures(
    pacs: Pacs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    written = write_patient(folder, "PACS-LOAD-1", seed=11)
    (folder / "notes.txt").write_text("not DICOM")
    private = pydicom.dcmread(written[0].files[0])
    private.SOPClassUID = private.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.9.1"
    private.SOPInstanceUID = private.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.9.2"
    )
    private.save_as(folder / "private.dcm")
    before = int(pacs.server.statistics()["CountInstances"])  # type: ignore[call-overload]

    assert _run(tmp_path, folder, pacs.server.dicom_port) == 1
    out = capsys.readouterr().out
    n_good = sum(len(w.files) for w in written)
    assert f"stored {n_good} of {n_good + 2} file(s) on ORTHANC@127.0.0.1" in out
    assert "2 file(s) failed:" in out
    assert "  notes.txt: not a readable DICOM file" in out
    assert "  private.dcm: the PACS accepted no presentation context for SOP class" in out
    assert int(pacs.server.statistics()["CountInstances"]) == before + n_good  # type: ignore[call-overload]
    with pacs.dimse(tmp_path / "cache") as src:
        assert len(src.find_series("PACS-LOAD-1")) == 3


def test_load_dicom_refused_association_ends_cleanly(
    pacs: Pacs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    write_patient(folder, "PACS-LOAD-2", seed=12)
    assert _run(tmp_path, folder, pacs.server.dicom_port, aet="NOBODY") == 1
    out = capsys.readouterr().out
    assert "stored 0 of 13 file(s)" in out
    # A permanent rejection is not retried (3 attempts allowed; see test_pacs_dimse).
    assert re.search(r"after [12] attempt\(s\): association rejected \(Rejected Permanent", out)
    assert "Called AE title not recognised" in out
    assert "13 file(s) failed:" in out


@IGNORE_PYNETDICOM_SOCKET_LEAK
def test_load_dicom_unreachable_pacs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    write_patient(folder, "PACS-LOAD-3", seed=13)
    assert _run(tmp_path, folder, free_port()) == 1
    assert "TCP connection failed" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["nohost", "host:notaport", ":104", "h:70000"])
def test_load_dicom_bad_address_is_a_usage_error(
    tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.dcm").write_bytes(b"x")
    rc = cli_main(["load-dicom", str(folder), "--pacs", bad, "--called-aet", "X"])
    assert rc == 2
    assert "--pacs" in capsys.readouterr().err


def test_load_dicom_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["load-dicom", str(tmp_path / "nope"), "--pacs", "h:104"]) == 2
    assert "does not exist" in capsys.readouterr().err
