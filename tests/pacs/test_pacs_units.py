"""Cache, multipart reader and query helpers on their own (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from connectors.errors import DicomInvalid, DicomWebError, PacsError
from connectors.pacs._multipart import boundary_of, iter_parts
from connectors.pacs._retry import RetryPolicy
from connectors.pacs.cache import MARKER, SeriesCache
from connectors.pacs.query import check_patient_id, date_range
from tests.pacs.dicom_data import write_series


def _series(tmp_path: Path, n: int = 3):  # type: ignore[no-untyped-def]
    return write_series(
        tmp_path / "src",
        patient_id="U1",
        study_uid="1.2.3",
        description="LGE",
        protocol="LGE",
        n_slices=n,
        series_number=1,
        seed=7,
    )


def test_cache_publishes_atomically_and_loads_in_instance_order(tmp_path: Path) -> None:
    w = _series(tmp_path)
    cache = SeriesCache(tmp_path / "cache")
    uid = w.series_instance_uid
    assert cache.load(uid) is None
    with cache.stage(uid, source="test") as staged:
        for f in reversed(w.files):
            ds = pydicom.dcmread(f)
            staged.add_bytes(ds.SOPInstanceUID, f.read_bytes())
        assert not cache.has(uid)  # invisible until the block ends
    loaded = cache.load(uid)
    assert loaded is not None
    assert [int(d.InstanceNumber) for d in loaded] == [1, 2, 3]
    manifest = json.loads((tmp_path / "cache" / uid / MARKER).read_text())
    assert manifest["n_instances"] == 3 and manifest["source"] == "test"
    assert list((tmp_path / "cache" / ".staging").iterdir()) == []


def test_cache_discards_a_failed_or_empty_retrieval(tmp_path: Path) -> None:
    w = _series(tmp_path)
    cache = SeriesCache(tmp_path / "cache")
    with pytest.raises(RuntimeError), cache.stage(w.series_instance_uid, source="t") as staged:
        staged.add_bytes("1.2.3.4", w.files[0].read_bytes())
        raise RuntimeError("network broke")
    assert not cache.has(w.series_instance_uid)
    with pytest.raises(PacsError, match="nothing was retrieved"):
        with cache.stage(w.series_instance_uid, source="t"):
            pass
    assert list((tmp_path / "cache" / ".staging").iterdir()) == []


def test_cache_detects_damage_and_missing_marker(tmp_path: Path) -> None:
    w = _series(tmp_path)
    cache = SeriesCache(tmp_path / "cache")
    uid = w.series_instance_uid
    with cache.stage(uid, source="t") as staged:
        staged.add_bytes("1.2.3.4", w.files[0].read_bytes())
    assert cache.has(uid)
    (tmp_path / "cache" / uid / "1.2.3.4.dcm").write_bytes(b"short")
    assert cache.load(uid) is None
    assert not (tmp_path / "cache" / uid).exists()


@pytest.mark.parametrize("bad", ["../etc", "1.2.3/../../x", "1..2", "", "1.2.a", "1" * 65])
def test_cache_refuses_non_uids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DicomInvalid):
        SeriesCache(tmp_path).series_dir(bad)


def test_multipart_any_chunking_and_errors() -> None:
    body = (
        b"preamble\r\n--B0\r\nContent-Type: application/dicom\r\n\r\nONE\r\n--B\r\n"
        b"--B0\r\nContent-Type: application/dicom\r\n\r\nTWO\r\n--B0--\r\n"
    )
    for n in (1, 2, 5, 64):
        chunks = [body[i : i + n] for i in range(0, len(body), n)]
        assert list(iter_parts(chunks, b"B0")) == [b"ONE\r\n--B", b"TWO"]
    with pytest.raises(DicomWebError, match="ended before"):
        list(iter_parts([body[:-10]], b"B0"))
    with pytest.raises(DicomWebError, match="application/json"):
        list(iter_parts([body.replace(b"application/dicom", b"application/json")], b"B0"))
    assert boundary_of('multipart/related; type="application/dicom"; boundary="abc"') == b"abc"
    with pytest.raises(DicomWebError):
        boundary_of("application/dicom+json")


def test_query_helpers() -> None:
    assert date_range("2025-01-01", None) == "20250101-"
    assert date_range(None, "20250102") == "-20250102"
    assert date_range(None, None) == ""
    with pytest.raises(DicomInvalid):
        date_range("2025-13-01", None)
    assert check_patient_id(" MRN1 ") == "MRN1"
    with pytest.raises(DicomInvalid):
        check_patient_id("MRN*")


def test_retry_policy() -> None:
    policy = RetryPolicy(max_retries=5, backoff_s=0.5, max_backoff_s=3)
    assert policy.attempts == 6
    assert [policy.delay(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
