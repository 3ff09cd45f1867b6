"""cds.sources: the configured sources and cohort placeholders."""

from __future__ import annotations

import datetime as dt

import pytest

from cds.config import Settings
from cds.errors import ConfigError
from cds.sources import expand_cohort, make_fhir_source, make_imaging_source
from connectors.fhir.ndjson import NdjsonFolderSource
from connectors.pacs.folder import DicomFolderSource
from tests.mapping.fhir_builders import patient, write_ndjson


def test_embedded_defaults(tmp_path):
    write_ndjson(tmp_path / "fhir", [patient("p1")])
    (tmp_path / "dicom").mkdir()
    s = Settings().replace(
        fhir__ndjson_dir=str(tmp_path / "fhir"), pacs__folder=str(tmp_path / "dicom")
    )
    fhir = make_fhir_source(s)
    assert isinstance(fhir, NdjsonFolderSource)
    assert fhir.cohort_patient_ids("all") == ["p1"]
    fhir.close()
    assert isinstance(make_imaging_source(s), DicomFolderSource)


def test_missing_folders_are_config_errors_naming_the_key(tmp_path):
    s = Settings().replace(fhir__ndjson_dir=str(tmp_path / "x"), pacs__folder=str(tmp_path / "y"))
    with pytest.raises(ConfigError, match="fhir.ndjson_dir"):
        make_fhir_source(s)
    with pytest.raises(ConfigError, match="pacs.folder"):
        make_imaging_source(s)


def test_expand_cohort_placeholders():
    day = dt.date(2026, 11, 1)
    q = (
        "search:Patient?_has:Encounter:patient:date=ge{as_of-30d}"
        "&_has:Encounter:patient:date=le{as_of}"
    )
    assert expand_cohort(q, day) == (
        "search:Patient?_has:Encounter:patient:date=ge2026-10-02"
        "&_has:Encounter:patient:date=le2026-11-01"
    )
    assert expand_cohort("all", day) == "all"
    assert expand_cohort("x{as_of+7d}", day) == "x2026-11-08"
