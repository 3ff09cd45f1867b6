"""The SEG, SR and overlay built from a label map: geometry, determinism, refusal of an
unusable series, and the DICOM checks of dicom3tools' dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from cds.imaging_results import (
    BURDEN_CODE,
    ImagingResultsError,
    build_results,
    to_source_geometry,
)
from cds.synth.generate import generate
from connectors.pacs.pixels import resample_slice
from connectors.pacs.series import not_lge_reason, order_slices


@pytest.fixture(scope="module")
def lge_series(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    out = tmp_path_factory.mktemp("results-cohort")
    generate(1, 5, out, image_size=40, n_slices=5, progress=False)
    by: dict[str, list[Dataset]] = {}
    for f in sorted((out / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        by.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    lge = [dss for dss in by.values() if not_lge_reason(dss) is None]
    ordered, _ = order_slices(lge[0])
    return ordered


def _labels(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    seg = np.zeros((n, size, size), dtype=np.uint8)
    seg[:, 8:24, 8:24] = 1
    seg[:, 10:14, 10:20] = 2
    seg[rng.random(seg.shape) < 0.05] = 2  # scattered pixels: every one must survive
    return seg


@pytest.mark.parametrize(("rows", "columns", "size"), [(50, 40, 32), (40, 64, 32), (32, 32, 32)])
def test_label_map_goes_back_to_the_source_grid_and_returns_unchanged(
    rows: int, columns: int, size: int
) -> None:
    labels = _labels(1, size)[0]
    src = to_source_geometry(labels, rows, columns)
    assert src.shape == (rows, columns) and src.dtype == np.uint8
    # the model's own resampling of the source-geometry mask gives the label map back,
    # except on the padding the model's square added around a non-square slice
    inside = resample_slice(np.ones((rows, columns)), size, nearest=True) > 0
    assert np.array_equal(resample_slice(src, size, nearest=True), labels * inside)
    assert (labels * ~inside).any() == (rows != columns)


def test_results_reference_the_segmented_slices_with_stable_uids(
    lge_series: list[Dataset],
) -> None:
    seg = _labels(3, 40)  # 3 of 5 slices segmented
    a = build_results(
        lge_series, seg, usable=True, burden=0.1234567, model_name="mprtm", model_version="v1"
    )
    b = build_results(
        lge_series, seg, usable=True, burden=0.1234567, model_name="mprtm", model_version="v1"
    )
    c = build_results(
        lge_series, seg, usable=True, burden=0.1234567, model_name="mprtm", model_version="v2"
    )
    uids = lambda r: [str(d.SOPInstanceUID) for d in r.datasets()]  # noqa: E731
    assert uids(a) == uids(b) and not set(uids(a)) & set(uids(c))
    assert a.seg.SeriesInstanceUID == b.seg.SeriesInstanceUID != c.seg.SeriesInstanceUID
    assert a.source_uids == tuple(str(lge_series[i].SOPInstanceUID) for i in (0, 2, 4))
    parsed = hd.seg.Segmentation.from_dataset(a.seg)
    enh = parsed.get_pixels_by_source_instance(
        source_sop_instance_uids=list(a.source_uids), segment_numbers=[2]
    )[..., 0]
    assert np.array_equal(enh, (seg == 2).astype(enh.dtype))
    assert str(parsed.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue) == (
        "74281007"
    )
    algo = parsed.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("mprtm", "v1")
    sr = hd.sr.Comprehensive3DSR.from_dataset(a.sr)
    assert sr.SeriesInstanceUID == b.sr.SeriesInstanceUID
    assert _burden(a.sr) == pytest.approx(12.3457)


def _burden(sr: Dataset) -> float:
    """The burden measurement of a TID 1500 report (walks the content tree)."""
    found: list[float] = []

    def walk(items: object) -> None:
        for item in items or []:  # type: ignore[attr-defined]
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if name is not None and name.CodeValue == BURDEN_CODE.value:
                found.append(float(item.MeasuredValueSequence[0].NumericValue))
            walk(item.get("ContentSequence"))

    walk(sr.ContentSequence)
    assert len(found) == 1
    return found[0]


def test_an_unusable_series_gets_no_results(lge_series: list[Dataset]) -> None:
    with pytest.raises(ImagingResultsError, match="not usable"):
        build_results(
            lge_series,
            _labels(3, 40),
            usable=False,
            burden=None,
            model_name="mprtm",
            model_version="v1",
        )
    with pytest.raises(ImagingResultsError, match="does not fit"):
        build_results(
            lge_series,
            _labels(9, 40),
            usable=True,
            burden=0.1,
            model_name="mprtm",
            model_version="v1",
        )


def test_dciodvfy_finds_no_errors(lge_series: list[Dataset], tmp_path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("dciodvfy missing: apt-get install dicom3tools (.ci/apt-packages.txt)")
    r = build_results(
        lge_series,
        _labels(3, 40),
        usable=True,
        burden=0.2,
        model_name="mprtm",
        model_version="v1",
        secondary_capture=True,
    )
    assert len(r.secondary_capture) == 3
    for k, ds in enumerate(r.datasets()):
        path = tmp_path / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], f"{ds.Modality}: {errors}"
