"""DICOMweb source against Orthanc's DICOMweb plugin: QIDO-RS finds what C-FIND finds,
WADO-RS returns every instance unchanged, the cache is used, errors are typed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from connectors.errors import DicomWebError
from connectors.pacs._retry import RetryPolicy
from connectors.pacs.cache import SeriesCache
from connectors.pacs.dicomweb import DicomWebSource, _retry_after
from tests.pacs.orthanc_server import free_port
from tests.pacs.pacs_env import PATIENTS, Pacs

pytestmark = pytest.mark.orthanc


def test_qido_finds_what_c_find_finds(pacs: Pacs, tmp_path: Path) -> None:
    with pacs.dicomweb(tmp_path / "web") as web, pacs.dimse(tmp_path / "dimse") as dimse:
        for pid in PATIENTS:
            assert sorted(web.find_series(pid), key=lambda r: r.series_instance_uid) == sorted(
                dimse.find_series(pid), key=lambda r: r.series_instance_uid
            )
        studies = web.find_studies(PATIENTS[0], date_from="20250101", date_to="20250131")
        assert [s.study_instance_uid for s in studies] == [
            pacs.series_of(PATIENTS[0])[0].study_instance_uid
        ]
        assert web.find_studies(PATIENTS[0], date_from="20250116") == []
        assert web.find_series("NOBODY") == []


def test_wado_retrieves_every_instance_identical(pacs: Pacs, tmp_path: Path) -> None:
    with pacs.dicomweb(tmp_path) as web:
        refs = web.find_series(PATIENTS[0])
        for ref in refs:
            datasets = web.retrieve_series(ref)
            written = pacs.by_uid(ref.series_instance_uid)
            assert len(datasets) == len(written.pixels) == ref.n_instances
            for ds in datasets:
                assert ds.PixelData == written.pixels[ds.SOPInstanceUID]
                assert ds.SeriesInstanceUID == ref.series_instance_uid


def test_wado_cache_used_without_contacting_the_pacs(pacs: Pacs, tmp_path: Path) -> None:
    with pacs.dicomweb(tmp_path) as web:
        ref = web.find_series(PATIENTS[1])[0]
        first = web.retrieve_series(ref)
        before = web.requests
        assert [d.SOPInstanceUID for d in web.retrieve_series(ref)] == [
            d.SOPInstanceUID for d in first
        ]
        assert web.requests == before
    dead_url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with DicomWebSource(dead_url, SeriesCache(tmp_path), retry=RetryPolicy(0)) as dead:
        again = dead.retrieve_series(ref)
        assert dead.requests == 0
        assert [d.PixelData for d in again] == [d.PixelData for d in first]
        with pytest.raises(DicomWebError, match="connection error"):
            dead.find_series(PATIENTS[1])


def test_wrong_credentials_are_not_retried(pacs: Pacs, tmp_path: Path) -> None:
    with pacs.dicomweb(tmp_path, password="wrong", retry=RetryPolicy(3, 0.01)) as web:
        with pytest.raises(DicomWebError) as info:
            web.find_series(PATIENTS[0])
        assert web.requests == 1
    assert info.value.status == 401
    assert "authentication failed" in str(info.value)
    assert "wrong" not in str(info.value)


def test_unreachable_server_is_retried_then_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with DicomWebSource(url, SeriesCache(tmp_path), retry=RetryPolicy(2, 0.01)) as web:
        with pytest.raises(DicomWebError, match="after 3 attempt"):
            web.find_studies("P1")
        assert web.requests == 3


def test_503_with_retry_after_then_success(tmp_path: Path) -> None:
    """An in-process transport answering like an overloaded server (RFC 9110 section
    10.2.3 Retry-After), then with an empty QIDO-RS result (PS3.18 8.3.4: 204)."""
    answers = [
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(204),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers.pop(0)

    with DicomWebSource(
        "http://pacs.invalid/dicom-web",
        SeriesCache(tmp_path),
        retry=RetryPolicy(3, 0.01),
        transport=httpx.MockTransport(handler),
    ) as web:
        assert web.find_studies("P1") == []
    assert seen == ["/dicom-web/studies"] * 3


def test_retry_after_parsing() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) == 0.0
    assert _retry_after("garbage") == 0.0
    assert 0.0 <= _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0
