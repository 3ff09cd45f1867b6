"""Fixtures of the segmentation I/O, fine-tuning and ``mprtm segment`` tests: the batch
tests' tiny synthetic cohort and tiny checkpoint (the batch's burden is compared with
``mprtm segment``'s), the PACS tests' real Orthanc, and a site built from the cohort: each
LGE series in its own folder with its truth masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.pipeline import load_series
from cds.site_masks import mr_series
from connectors.pacs.folder import DicomFolderSource
from tests.batch.conftest import checkpoint, cohort_dir  # noqa: F401  (shared fixtures)
from tests.pacs.conftest import _collect_leaked_sockets, start_orthanc  # noqa: F401


@dataclass
class SiteSeries:
    """One series of the site: its folder, datasets in slice order and truth labels."""

    uid: str
    folder: Path
    ordered: list[pydicom.Dataset]
    truth: np.ndarray  # (S, rows, cols) uint8


def truth_of(cohort: Path, uid: str, ordered: list[pydicom.Dataset]) -> np.ndarray:
    with np.load(cohort / "truth" / "masks" / f"{uid}.npz") as z:
        index = {str(u): i for i, u in enumerate(z["sop_instance_uids"])}
        return np.asarray(z["masks"])[[index[str(ds.SOPInstanceUID)] for ds in ordered]]


@pytest.fixture(scope="session")
def site(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[SiteSeries]:  # noqa: F811
    """The cohort's LGE series with masks, each copied into ``<root>/<uid>/``."""
    root = tmp_path_factory.mktemp("site")
    source = DicomFolderSource(cohort_dir / "dicom")
    out = []
    for uid, ref in sorted(mr_series(source).items()):
        if not (cohort_dir / "truth" / "masks" / f"{uid}.npz").is_file():
            continue
        ordered = load_series(source.retrieve_series(ref), 16).ordered
        (root / uid).mkdir()
        for k, ds in enumerate(ordered):
            ds.save_as(root / uid / f"{k:03d}.dcm")
        out.append(SiteSeries(uid, root / uid, ordered, truth_of(cohort_dir, uid, ordered)))
    assert len(out) >= 10, "the test cohort should hold at least 10 LGE series"
    return out
