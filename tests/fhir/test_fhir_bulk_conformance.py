"""Bulk Data IG conformance of the export client: token-protected files on another host,
``deleted``, final versus transient status errors, and the job deleted after a failed
download.  Two real local HTTP servers (tests/servers/bulk/server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.errors import FhirError
from connectors.fhir._http import FhirHttp
from connectors.fhir.bulk import BulkExporter, BulkExportError
from connectors.fhir.rest import BearerAuth
from tests.fhir.cohort import Cohort, build_cohort
from tests.fhir.test_fhir_bulk import write_folder
from tests.servers.bulk.server import BulkTestServer

TOKEN = "tok-secret"


@pytest.fixture
def cohort() -> Cohort:
    return build_cohort(n_patients=3, n_obs=2, prefix="bc")


@pytest.fixture
def servers(tmp_path: Path, cohort: Cohort) -> Iterator[tuple[BulkTestServer, BulkTestServer]]:
    """A token-protected FHIR server whose manifest points at a second host for files."""
    write_folder(tmp_path / "src", cohort, broken_line=False)
    fhir = BulkTestServer(tmp_path / "src", polls_before_done=0, token=TOKEN).start()
    files = BulkTestServer(tmp_path / "src", token=TOKEN).start()
    files.jobs = fhir.jobs
    fhir.file_base_url = files.base_url
    yield fhir, files
    fhir.stop()
    if files._httpd is not None:
        files.stop()


def _exporter(server: BulkTestServer, **kw: object) -> BulkExporter:
    http = FhirHttp(server.base_url, backoff_s=0.02, max_retries=2, auth=BearerAuth(TOKEN))
    return BulkExporter(http, min_poll_s=0.02, progress=False, **kw)  # type: ignore[arg-type]


def _origin(url: str) -> str:
    return url.removesuffix("/fhir")


def test_protected_files_on_an_allowed_host_get_the_token(
    servers: tuple[BulkTestServer, BulkTestServer], tmp_path: Path
) -> None:
    fhir, files = servers
    with _exporter(fhir, file_origins=[_origin(files.base_url)]) as ex:
        result = ex.export(tmp_path / "out", types=["Patient", "Observation"])
    assert result.counts() == {"Patient": 3, "Observation": 3 * 4}
    assert files.auth_seen and all(sent for _, sent in files.auth_seen)
    assert fhir.jobs == {}  # deleted when done


def test_protected_files_on_an_unlisted_host_never_get_the_token(
    servers: tuple[BulkTestServer, BulkTestServer], tmp_path: Path
) -> None:
    fhir, files = servers
    with _exporter(fhir) as ex, pytest.raises(BulkExportError, match="bulk_file_origins"):
        ex.export(tmp_path / "out", types=["Patient"])
    assert files.auth_seen == []  # not contacted at all
    assert fhir.jobs == {}  # the job is deleted after the failed download too


def test_job_is_deleted_after_a_broken_download(
    servers: tuple[BulkTestServer, BulkTestServer], tmp_path: Path
) -> None:
    fhir, files = servers
    origin = _origin(files.base_url)
    files.stop()  # the file host is down: the download fails
    with (
        _exporter(fhir, file_origins=[origin]) as ex,
        pytest.raises(FhirError, match="connection failed"),
    ):
        ex.export(tmp_path / "out", types=["Patient"])
    assert ("DELETE" in {m for m, _, _ in fhir.log}) and fhir.jobs == {}


def test_deleted_resources_are_read(tmp_path: Path, cohort: Cohort) -> None:
    write_folder(tmp_path / "src", cohort, broken_line=False)
    server = BulkTestServer(tmp_path / "src", polls_before_done=0).start()
    server.deleted = ["Observation/gone-1", "Condition/gone-2"]
    try:
        with _exporter(server) as ex:
            result = ex.export(tmp_path / "out", types=["Patient"], since="2020-01-01T00:00:00Z")
    finally:
        server.stop()
    assert result.deleted == ["Observation/gone-1", "Condition/gone-2"]
    assert (tmp_path / "out" / "deleted" / "Bundle.001.ndjson").is_file()
    assert result.warnings == []


@pytest.mark.parametrize("status", [400, 404, 500])
def test_error_status_with_a_non_transient_outcome_is_final(
    tmp_path: Path, cohort: Cohort, status: int
) -> None:
    write_folder(tmp_path / "src", cohort, broken_line=False)
    server = BulkTestServer(tmp_path / "src", polls_before_done=0).start()
    server.status_error = (status, "processing", 100)
    try:
        with _exporter(server) as ex, pytest.raises(BulkExportError, match="processing test"):
            ex.export(tmp_path / "out")
        polls = [p for m, p, _ in server.log if m == "GET" and "bulkstatus" in p]
        assert len(polls) == 1  # final at once: no retry of a failed job
        assert server.jobs == {}
    finally:
        server.stop()


def test_error_status_with_a_transient_outcome_is_waited_out(
    tmp_path: Path, cohort: Cohort
) -> None:
    write_folder(tmp_path / "src", cohort, broken_line=False)
    server = BulkTestServer(tmp_path / "src", polls_before_done=0).start()
    server.status_error = (503, "transient", 4)  # more than FhirHttp's 2 retries
    try:
        with _exporter(server) as ex:
            result = ex.export(tmp_path / "out", types=["Patient"])
    finally:
        server.stop()
    assert result.counts() == {"Patient": 3}
    polls = [s for m, p, s in server.log if m == "GET" and "bulkstatus" in p]
    assert polls == [503, 503, 503, 503, 200]
