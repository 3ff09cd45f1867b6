"""LGE series selection through a real Orthanc (C-FIND, QIDO-RS) and the folder source.

One study holds a localizer, a cine SSFP, a T2 STIR, a TI scout and an LGE acquisition
reconstructed twice, magnitude and phase-sensitive, under the same name (Philips style:
ImageType ``M_IR`` and ``R_IR``).  Only the attributes the queries return tell the two
reconstructions apart, so the phase-sensitive one comes back only when ImageType travels
through C-FIND, QIDO-RS and the folder index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from cds.config import PacsSettings
from connectors.pacs.base import SeriesRef
from connectors.pacs.folder import DicomFolderSource
from connectors.pacs.recognition import classify_series
from connectors.pacs.series import select_lge_series
from tests.pacs.compressed_data import upload
from tests.pacs.mr_attrs import mr_series
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.pacs.pacs_env import OUR_AET, Pacs

pytestmark = pytest.mark.orthanc

PID = "LGESEL-P1"
LGE_ATTRS = {
    "ScanningSequence": ["GR", "IR"],
    "SequenceVariant": ["SK", "SP", "MP"],
    "InversionTime": 280,
    "EchoTime": 1.2,
    "ContrastBolusAgent": "gadobutrol",
    "ContrastBolusRoute": "IV",
    "Manufacturer": "Philips Medical Systems",
}


def _study() -> dict[str, list[Dataset]]:
    """The series of one cardiac study, by role."""
    study = {"StudyInstanceUID": generate_uid(), "PatientID": PID}
    series: dict[str, list[Dataset]] = {
        "localizer": mr_series(
            n_positions=3,
            SeriesDescription="tri_pos",
            ImageType=["ORIGINAL", "PRIMARY", "M", "LOCALIZER"],
            SeriesNumber=1,
            **study,
        ),
        "cine": mr_series(
            n_positions=2,
            phases=tuple({"TriggerTime": 40.0 * k} for k in range(12)),
            SeriesDescription="SA cine SSFP",
            ScanningSequence="GR",
            SequenceVariant=["SK", "SS"],
            SeriesNumber=2,
            **study,
        ),
        "stir": mr_series(
            SeriesDescription="T2 STIR SA",
            ScanningSequence=["SE", "IR"],
            InversionTime=170,
            EchoTime=60,
            SeriesNumber=3,
            **study,
        ),
        "ti_scout": mr_series(
            n_positions=1,
            phases=tuple({"InversionTime": 100.0 + 25 * k} for k in range(10)),
            SeriesDescription="TI scout",
            ScanningSequence=["GR", "IR"],
            SeriesNumber=4,
            **study,
        ),
        "magnitude": mr_series(
            n_positions=6,
            SeriesDescription="LGE SA",
            ImageType=["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"],
            SeriesNumber=1101,
            **LGE_ATTRS,
            **study,
        ),
        "psir": mr_series(
            n_positions=6,
            SeriesDescription="LGE SA",
            ImageType=["ORIGINAL", "PRIMARY", "R_IR", "R", "IR"],
            SeriesNumber=1102,
            **LGE_ATTRS,
            **study,
        ),
    }
    # the two reconstructions share the acquisition's frame of reference and positions
    for a, b in zip(series["magnitude"], series["psir"], strict=True):
        b.FrameOfReferenceUID = a.FrameOfReferenceUID
    return series


@pytest.fixture(scope="module")
def study_pacs(
    start_orthanc: Callable[..., OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Pacs, dict[str, str], Path]:
    """An Orthanc and a folder holding the study; the SeriesInstanceUID of each role."""
    server = start_orthanc(modalities={OUR_AET: ("127.0.0.1", free_port())})
    folder = tmp_path_factory.mktemp("lgesel")
    uids: dict[str, str] = {}
    for role, datasets in _study().items():
        paths = []
        for k, ds in enumerate(datasets):
            paths.append(folder / f"{role}-{k:03d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
        upload(server, paths)
        uids[role] = str(datasets[0].SeriesInstanceUID)
    return Pacs(server=server, move_port=0, series=[]), uids, folder


def _check(refs: list[SeriesRef], uids: dict[str, str]) -> str:
    """Checks the attributes, kinds and picks; returns the default pick's series UID."""
    by_uid = {r.series_instance_uid: r for r in refs}
    assert set(by_uid) == set(uids.values())
    role = {uid: name for name, uid in uids.items()}
    kinds = {role[r.series_instance_uid]: classify_series(r).kind for r in refs}
    assert kinds == {
        "localizer": "localizer",
        "cine": "cine",
        "stir": "t2_weighted",
        "ti_scout": "ti_scout",
        "magnitude": "lge",
        "psir": "lge_psir",
    }
    psir = by_uid[uids["psir"]]
    assert psir.image_type.split("\\")[2] == "R_IR"
    assert psir.inversion_time_ms == 280.0
    assert psir.contrast_agent == "gadobutrol"
    assert psir.series_number == 1102
    assert "IR" in psir.scanning_sequence.split("\\")
    cfg = PacsSettings()
    chosen = select_lge_series(refs, include=cfg.lge_patterns, exclude=cfg.exclude_patterns)
    assert chosen is not None and chosen.series_instance_uid == uids["psir"]
    pick = select_lge_series(
        refs, include=cfg.lge_patterns, exclude=cfg.exclude_patterns, prefer_phase_sensitive=False
    )
    assert pick is not None and pick.series_instance_uid == uids["magnitude"]
    # names alone cannot tell the twins apart: the pick then falls to the higher UID,
    # whichever reconstruction that is
    bare = [replace(r, image_type="") for r in refs]
    twins = {uids["psir"], uids["magnitude"]}
    pick = select_lge_series(bare, include=cfg.lge_patterns, exclude=cfg.exclude_patterns)
    assert pick is not None and pick.series_instance_uid == max(twins)
    return chosen.series_instance_uid


def test_c_find_gives_the_psir_series(
    study_pacs: tuple[Pacs, dict[str, str], Path], tmp_path: Path
) -> None:
    pacs, uids, _ = study_pacs
    with pacs.dimse(tmp_path) as src:
        assert _check(src.find_series(PID), uids) == uids["psir"]


def test_qido_rs_gives_the_psir_series(
    study_pacs: tuple[Pacs, dict[str, str], Path], tmp_path: Path
) -> None:
    pacs, uids, _ = study_pacs
    with pacs.dicomweb(tmp_path) as src:
        assert _check(src.find_series(PID), uids) == uids["psir"]


def test_folder_gives_the_psir_series(study_pacs: tuple[Pacs, dict[str, str], Path]) -> None:
    _, uids, folder = study_pacs
    assert _check(DicomFolderSource(folder).find_series(PID), uids) == uids["psir"]
