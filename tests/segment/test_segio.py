"""DICOM SEG and NIfTI masks: round trips, matching to series, refusal of a wrong geometry."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from cds.errors import MaskFileError
from cds.segio import (
    SeriesGeometry,
    nifti_affine,
    read_nifti,
    read_seg,
    seg_series_uid,
    write_nifti,
    write_seg,
)
from cds.site_masks import load_site_data
from connectors.pacs.pixels import resample_mask, restore_mask
from tests.segment.conftest import SiteSeries


def _with_enhancement(site: list[SiteSeries]) -> SiteSeries:
    return next(s for s in site if (s.truth == 2).any())


def test_seg_round_trip_gives_the_same_masks(site: list[SiteSeries], tmp_path: Path) -> None:
    s = _with_enhancement(site)
    path = write_seg(s.ordered, s.truth, tmp_path / "m.dcm")
    assert seg_series_uid(path) == s.uid
    mask = read_seg(path, SeriesGeometry.of(s.ordered))
    assert mask.labels.dtype == np.uint8
    np.testing.assert_array_equal(mask.labels, s.truth)
    assert set(np.unique(mask.labels)) == {0, 1, 2}
    # every slice with myocardium is annotated (empty slices may have no frame)
    assert mask.annotated[(s.truth > 0).any((1, 2))].all()


def test_nifti_round_trip_and_affine(site: list[SiteSeries], tmp_path: Path) -> None:
    s = _with_enhancement(site)
    affine = nifti_affine(s.ordered)
    path = write_nifti(s.truth, tmp_path / "m.nii.gz", affine)
    mask = read_nifti(path, SeriesGeometry.of(s.ordered))
    np.testing.assert_array_equal(mask.labels, s.truth)
    # voxel (0, 0, 0) is the first slice's ImagePositionPatient, in RAS
    x, y, z = (float(v) for v in s.ordered[0].ImagePositionPatient)
    np.testing.assert_allclose(affine[:3, 3], [-x, -y, z], atol=1e-6)
    assert abs(np.linalg.det(affine[:3, :3])) > 0


def test_seg_of_another_matrix_is_refused_naming_the_file(
    site: list[SiteSeries], tmp_path: Path
) -> None:
    s = site[0]
    path = write_seg(s.ordered, s.truth, tmp_path / "contours.dcm")
    bigger = dataclasses.replace(SeriesGeometry.of(s.ordered), rows=s.truth.shape[1] + 2)
    with pytest.raises(MaskFileError, match=r"contours\.dcm: matrix"):
        read_seg(path, bigger)


def test_seg_referencing_a_foreign_instance_is_refused(
    site: list[SiteSeries], tmp_path: Path
) -> None:
    s = site[0]
    path = write_seg(s.ordered, s.truth, tmp_path / "contours.dcm")
    g = SeriesGeometry.of(s.ordered)
    fewer = dataclasses.replace(g, sop_instance_uids=g.sop_instance_uids[:-1] + ("1.2.3.4",))
    with pytest.raises(MaskFileError, match=r"contours\.dcm: references instance .* not a slice"):
        read_seg(path, fewer)


def test_nifti_with_other_slice_count_is_refused(site: list[SiteSeries], tmp_path: Path) -> None:
    s = site[0]
    path = write_nifti(s.truth[:-1], tmp_path / "short.nii.gz", np.eye(4))
    with pytest.raises(MaskFileError, match=r"short\.nii\.gz: shape .* does not match series"):
        read_nifti(path, SeriesGeometry.of(s.ordered))


def _series_dir(site: list[SiteSeries], root: Path, n: int) -> Path:
    series = root / "series"
    for s in site[:n]:
        shutil.copytree(s.folder, series / "study" / f"folder-{s.uid[-6:]}")
    return series


def test_masks_matched_by_uid_and_by_file_name(site: list[SiteSeries], tmp_path: Path) -> None:
    a, b, c = site[:3]
    series = _series_dir(site, tmp_path, 4)  # the fourth series has no mask
    masks = tmp_path / "masks"
    masks.mkdir()
    write_seg(a.ordered, a.truth, masks / "anything.dcm")  # by ReferencedSeriesSequence
    write_nifti(b.truth, masks / f"{b.uid}.nii.gz", np.eye(4))  # by SeriesInstanceUID
    write_nifti(c.truth, masks / f"folder-{c.uid[-6:]}.nii", np.eye(4))  # by folder name
    (masks / "README.txt").write_text("contoured by reader 1")
    data = load_site_data(series, masks, 64)
    assert data.counts["series_found"] == 4
    assert data.counts["series_with_masks"] == 3 and data.counts["series_without_masks"] == 1
    assert data.counts["dicom_seg_files"] == 1 and data.counts["nifti_files"] == 2
    got = {e.input.patient_id: e for e in data.examples}
    for s in (a, b, c):
        ex = got[s.uid]
        assert ex.input.image is not None and ex.masks is not None
        assert ex.input.image.shape == ex.masks.shape == (len(s.ordered), 64, 64)
        np.testing.assert_array_equal(ex.masks, resample_mask(s.truth, 64))
    again = load_site_data(series, masks, 64)
    assert again.fingerprint == data.fingerprint
    write_nifti(np.zeros_like(b.truth), masks / f"{b.uid}.nii.gz", np.eye(4))
    assert load_site_data(series, masks, 64).fingerprint != data.fingerprint


@pytest.mark.parametrize("problem", ["unknown-name", "unknown-series", "duplicate", "geometry"])
def test_mask_set_problems_are_refused_naming_the_file(
    site: list[SiteSeries], tmp_path: Path, problem: str
) -> None:
    a, b = site[:2]
    series = _series_dir(site, tmp_path, 1)  # only series a
    masks = tmp_path / "masks"
    masks.mkdir()
    write_seg(a.ordered, a.truth, masks / "a.dcm")
    if problem == "unknown-name":
        write_nifti(a.truth, masks / "patient-7.nii.gz", np.eye(4))
        want = r"patient-7\.nii\.gz: matches no series by name"
    elif problem == "unknown-series":
        write_seg(b.ordered, b.truth, masks / "b.dcm")
        want = rf"b\.dcm: references series {b.uid}, which is not in the series folder"
    elif problem == "duplicate":
        write_nifti(a.truth, masks / f"{a.uid}.nii.gz", np.eye(4))
        want = rf"a\.dcm: a second mask for series {a.uid}"
    else:
        (masks / "a.dcm").unlink()
        write_nifti(a.truth[:, :, :-1], masks / f"{a.uid}.nii.gz", np.eye(4))
        want = rf"{a.uid}\.nii\.gz: shape .* does not match series"
    with pytest.raises(MaskFileError, match=want):
        load_site_data(series, masks, 64)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 48, 40), (2, 30, 52)])
def test_restore_mask_inverts_resample_mask(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, shape).astype(np.uint8)
    size = 2 * max(shape[1:])  # upsampling by an integer factor loses nothing
    grid = resample_mask(mask, size)
    np.testing.assert_array_equal(restore_mask(grid, shape[1], shape[2]), mask)
    # and on a coarser grid each pixel keeps the label of the grid cell covering it
    coarse = resample_mask(mask, 16)
    back = restore_mask(coarse, shape[1], shape[2])
    assert back.shape == shape
    np.testing.assert_array_equal(resample_mask(back, 16), coarse)
