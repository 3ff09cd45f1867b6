"""Bulk Data export end to end against the Bulk Data IG test server."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.errors import FhirAuthError, ResourceNotFound
from connectors.fhir._http import FhirHttp
from connectors.fhir.bulk import BulkExporter, BulkExportError
from connectors.fhir.rest import BearerAuth
from tests.fhir.cohort import Cohort, build_cohort
from tests.servers.bulk.server import BulkTestServer


def write_folder(folder: Path, cohort: Cohort, *, broken_line: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    types = sorted({r["resourceType"] for r in cohort.resources})
    for rtype in types:
        lines = [json.dumps(r) for r in cohort.by_type(rtype)]
        if rtype == "Observation" and broken_line:
            lines.append('{"resourceType": "Observation", "id": "cut-off-li')
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")


@pytest.fixture
def cohort() -> Cohort:
    return build_cohort(n_patients=4, n_obs=3, prefix="bk")


@pytest.fixture
def bulk_server(tmp_path: Path, cohort: Cohort) -> Iterator[BulkTestServer]:
    write_folder(tmp_path / "src", cohort)
    # another patient outside the Group
    extra = build_cohort(n_patients=1, n_obs=1, prefix="other")
    with (tmp_path / "src" / "Patient.ndjson").open("a") as f:
        f.write(json.dumps(extra.by_type("Patient")[0]) + "\n")
    server = BulkTestServer(
        tmp_path / "src", polls_before_done=2, retry_after=0.3, part_size=10
    ).start()
    yield server
    server.stop()


def exporter(server: BulkTestServer, **kw: object) -> BulkExporter:
    token = str(kw.pop("token", ""))
    http = FhirHttp(
        server.base_url, backoff_s=0.05, max_retries=2, auth=BearerAuth(token) if token else None
    )
    return BulkExporter(http, min_poll_s=0.05, progress=False, **kw)  # type: ignore[arg-type]


def test_group_export_end_to_end(
    bulk_server: BulkTestServer, cohort: Cohort, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    with exporter(bulk_server) as ex:
        result = ex.export(out, group_id=cohort.group_id)
    assert time.monotonic() - t0 >= 0.55  # waited Retry-After (0.3 s) twice
    assert result.polls == 3
    assert [s for (_, _, s) in bulk_server.log].count(429) == 0  # never polled too soon
    counts = result.counts()
    assert counts["Patient"] == 4  # the patient outside the Group is not exported
    assert counts["Observation"] == 4 * 5  # 20 over two files of at most 10
    assert counts["DocumentReference"] == 8 and "Group" not in counts
    assert (out / "Observation.001.ndjson").is_file() and (out / "Observation.002.ndjson").is_file()
    ids = {
        json.loads(line)["id"]
        for p in out.glob("Observation.*.ndjson")
        for line in p.read_text().splitlines()
    }
    assert ids == {r["id"] for r in cohort.by_type("Observation")}
    # the error file: the cut-off line was reported, not exported
    assert len(result.errors) == 1 and "Observation.ndjson line 21: not JSON" in result.errors[0]
    assert (out / "errors" / "OperationOutcome.001.ndjson").is_file()
    assert result.warnings == []
    assert "DELETE" in {m for (m, _, _) in bulk_server.log}  # job cleaned up
    manifest = json.loads((out / "bulk-manifest.json").read_text())
    assert manifest["transactionTime"] == result.transaction_time


def test_patient_export_with_type_and_since(bulk_server: BulkTestServer, tmp_path: Path) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with exporter(bulk_server) as ex:
        result = ex.export(tmp_path / "a", types=["Patient", "Condition"])
        later = ex.export(tmp_path / "b", since=future)
    assert set(result.counts()) == {"Patient", "Condition"}
    assert result.counts()["Patient"] == 5
    assert later.files == []
    kick = [p for (m, p, _) in bulk_server.log if "$export" in p]
    assert "_type=Patient%2CCondition" in kick[0] and "_since=" in kick[1]


def test_bearer_token_on_kickoff_status_and_files(tmp_path: Path, cohort: Cohort) -> None:
    write_folder(tmp_path / "src", cohort, broken_line=False)
    server = BulkTestServer(tmp_path / "src", polls_before_done=0, token="tok").start()
    try:
        with exporter(server) as ex, pytest.raises(FhirAuthError, match="HTTP 401"):
            ex.export(tmp_path / "x")
        with exporter(server, token="tok") as ex:
            result = ex.export(tmp_path / "y", types=["Patient"])
        assert result.counts() == {"Patient": 4} and result.errors == []
    finally:
        server.stop()


def test_failures_are_reported(bulk_server: BulkTestServer, tmp_path: Path) -> None:
    with exporter(bulk_server, timeout_s=1) as ex:
        with pytest.raises(ResourceNotFound, match="Group/nope not found"):
            ex.export(tmp_path / "x", group_id="nope")
        bulk_server.polls_before_done = 1000
        with pytest.raises(BulkExportError, match="did not finish within 1s"):
            ex.export(tmp_path / "y")
        assert bulk_server.jobs == {}  # the abandoned job was cancelled (DELETE)
        with pytest.raises(ValueError, match="timezone-aware"):
            ex.kick_off(since=dt.datetime(2024, 1, 1))


def test_bulk_export_cli(
    bulk_server: BulkTestServer, cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cds.cli import main
    from connectors.fhir.ndjson import NdjsonFolderSource

    out = tmp_path / "export"
    rc = main(
        [
            "bulk-export",
            str(out),
            "--group",
            cohort.group_id,
            "--fhir-url",
            bulk_server.base_url,
            "--since",
            "2000-01-01T00:00:00Z",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 1  # the server reported the cut-off line
    assert "server error: error invalid: Observation.ndjson line 21: not JSON" in printed
    with NdjsonFolderSource(out) as src:
        assert sorted(src.cohort_patient_ids("all")) == sorted(cohort.patient_ids)
        rec = src.patient_record(cohort.patient_ids[0])
        assert len(rec.observations) == 5
    assert (
        main(["bulk-export", str(out), "--since", "2000-01-01", "--fhir-url", bulk_server.base_url])
        == 2
    )
