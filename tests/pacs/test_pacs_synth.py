"""The synthetic cohort (``mprtm synth``) through Orthanc: loaded by ``load-dicom``, found
by C-FIND and QIDO-RS, and the series chosen by the LGE selection is the one the
simulator wrote the ground-truth mask for, never the localizer or a cine series; the
retrieved slices equal the files, in the same spatial order as the folder source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from cds.cli import main as cli_main
from cds.config import PacsSettings
from connectors.pacs.base import SeriesRef
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.series import order_slices, select_lge_series
from tests.pacs.dicom_data import write_series
from tests.pacs.pacs_env import Pacs

pytestmark = pytest.mark.orthanc


@dataclass
class Cohort:
    dicom: Path
    lge_truth: set[str]  # SeriesInstanceUIDs that have a ground-truth mask
    patient_ids: list[str]
    cine: set[str]  # cine series we added to the simulator's studies


@pytest.fixture(scope="module")
def cohort(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    out = tmp_path_factory.mktemp("synth")
    args = ["synth", "--patients", "10", "--seed", "1", "--out", str(out), "--image-size", "64"]
    assert cli_main(args) == 0
    dicom = out / "dicom"
    studies: dict[str, tuple[str, str]] = {}
    for f in sorted(dicom.rglob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        studies.setdefault(str(ds.PatientID), (str(ds.StudyInstanceUID), str(ds.StudyDate)))
    # The simulator writes LGE (and sometimes a localizer); add a cine series to three
    # studies so that the PACS holds every kind of series the selection must ignore.
    cine = set()
    for k, (pid, (study, date)) in enumerate(sorted(studies.items())[:3]):
        w = write_series(
            dicom,
            patient_id=pid,
            study_uid=study,
            description="cine SSFP SAX",
            protocol="cine_retro",
            n_slices=4,
            series_number=90,
            seed=500 + k,
            size=64,
            study_date=date,
        )
        cine.add(w.series_instance_uid)
    rc = cli_main(
        [
            "load-dicom",
            str(dicom),
            "--pacs",
            f"127.0.0.1:{pacs.server.dicom_port}",
            "--called-aet",
            pacs.server.aet,
            "--no-progress",
        ]
    )
    assert rc == 0
    truth = {p.stem for p in (out / "truth" / "masks").glob("*.npz")}
    return Cohort(dicom, truth, sorted(studies), cine)


def _select(refs: list[SeriesRef]) -> SeriesRef | None:
    cfg = PacsSettings()
    return select_lge_series(refs, include=cfg.lge_patterns, exclude=cfg.exclude_patterns)


@pytest.mark.parametrize("kind", ["dimse", "dicomweb"])
def test_lge_series_chosen_from_the_pacs(
    pacs: Pacs, cohort: Cohort, tmp_path: Path, kind: str
) -> None:
    folder = DicomFolderSource(cohort.dicom)
    source = pacs.dimse(tmp_path) if kind == "dimse" else pacs.dicomweb(tmp_path)
    chosen = set()
    try:
        for pid in cohort.patient_ids:
            refs = source.find_series(pid)
            key = lambda r: r.series_instance_uid  # noqa: E731
            assert sorted(refs, key=key) == sorted(folder.find_series(pid), key=key)
            lge = _select(refs)
            assert lge is not None, f"no LGE series chosen for {pid}"
            assert lge.series_instance_uid in cohort.lge_truth
            assert lge.series_instance_uid not in cohort.cine
            chosen.add(lge.series_instance_uid)
            from_pacs, _ = order_slices(source.retrieve_series(lge))
            from_folder, method = order_slices(folder.retrieve_series(lge))
            assert method == "position"
            assert [d.SOPInstanceUID for d in from_pacs] == [d.SOPInstanceUID for d in from_folder]
            assert [d.PixelData for d in from_pacs] == [d.PixelData for d in from_folder]
    finally:
        source.close()
        folder.close()
    assert chosen == cohort.lge_truth
