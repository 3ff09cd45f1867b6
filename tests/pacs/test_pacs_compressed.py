"""Compressed and Enhanced MR series through a real Orthanc over C-GET, C-MOVE and
WADO-RS give the volume of the uncompressed single-frame original: exactly for lossless
codecs, at PSNR >= 40 dB for lossy ones; they arrive in the transfer syntax the PACS
holds (no transcoding on the PACS side) and are decoded here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from connectors.pacs.base import SeriesRef
from connectors.pacs.pixels import series_volume, slice_pixels
from connectors.pacs.series import not_lge_reason, order_slices
from tests.pacs.compressed_data import (
    ORTHANC_TRANSCODED,
    PATIENT_ID,
    VARIANTS,
    original,
    orthanc_transcode,
    upload,
    write_variant,
)
from tests.pacs.orthanc_server import OrthancServer, free_port
from tests.pacs.pacs_env import IGNORE_PYNETDICOM_SOCKET_LEAK, OUR_AET, Pacs

SIZE = 32
EXPECTED = {v.name: (v.received, v.lossless) for v in VARIANTS}
EXPECTED.update({name: ((ts,), lossless) for name, ts, lossless in ORTHANC_TRANSCODED})


@pytest.fixture(scope="module")
def loaded(
    start_orthanc: Callable[..., OrthancServer], tmp_path_factory: pytest.TempPathFactory
) -> Pacs:
    """An Orthanc holding the original and every variant of the test series."""
    move_port = free_port()
    server = start_orthanc(modalities={OUR_AET: ("127.0.0.1", move_port)})
    out = tmp_path_factory.mktemp("compressed")
    folder = out / "original"
    folder.mkdir()
    paths = []
    for k, ds in enumerate(original()):
        paths.append(folder / f"{k:03d}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    series_id = upload(server, paths)
    for name, syntax, _ in ORTHANC_TRANSCODED:
        orthanc_transcode(server, series_id, name, syntax)
    for variant in VARIANTS:
        upload(server, write_variant(variant, out))
    return Pacs(server=server, move_port=move_port, series=[])


def _reference() -> tuple[np.ndarray, np.ndarray, float | None]:
    ordered, _ = order_slices(original())
    raw = np.stack([slice_pixels(ds) for ds in ordered])
    vol = series_volume(ordered, SIZE)
    return raw, vol.image, vol.pixel_spacing_mm


def _psnr(ref: np.ndarray, got: np.ndarray) -> float:
    mse = float(np.mean((ref - got) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4095.0**2 / mse)


def _check_all(refs: list[SeriesRef], retrieve: Callable[[SeriesRef], list]) -> int:
    """Checks every expected form against the original; returns how many were checked."""
    raw_ref, vol_ref, spacing_ref = _reference()
    by_name = {r.series_description: r for r in refs}
    assert set(EXPECTED) <= set(by_name), sorted(by_name)
    for name, (syntaxes, lossless) in EXPECTED.items():
        datasets = retrieve(by_name[name])
        received = {str(ds.file_meta.TransferSyntaxUID) for ds in datasets}
        assert len(received) == 1 and received <= set(syntaxes), (name, received)
        ordered, how = order_slices(datasets)
        assert how == "position", name
        raw = np.stack([slice_pixels(ds) for ds in ordered])
        vol = series_volume(ordered, SIZE)
        assert raw.shape == raw_ref.shape, name
        assert vol.pixel_spacing_mm == spacing_ref, name
        assert not_lge_reason(datasets) is None, name
        if lossless:
            assert np.array_equal(raw, raw_ref), name
            assert np.array_equal(vol.image, vol_ref), name
        else:
            psnr = _psnr(raw_ref, raw)
            assert 40.0 <= psnr < float("inf"), (name, psnr)
    return len(EXPECTED)


@pytest.mark.parametrize("retrieve", ["get", "move"])
@IGNORE_PYNETDICOM_SOCKET_LEAK
def test_dimse_retrieval_decodes_every_syntax(loaded: Pacs, tmp_path: Path, retrieve: str) -> None:
    with loaded.dimse(tmp_path / "cache", retrieve=retrieve) as src:
        assert _check_all(src.find_series(PATIENT_ID), src.retrieve_series) == len(EXPECTED)


def test_wado_rs_retrieval_decodes_every_syntax(loaded: Pacs, tmp_path: Path) -> None:
    with loaded.dicomweb(tmp_path / "cache") as src:
        assert _check_all(src.find_series(PATIENT_ID), src.retrieve_series) == len(EXPECTED)
