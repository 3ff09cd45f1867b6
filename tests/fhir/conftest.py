"""Fixtures of the FHIR connector tests: the real FHIR engine, cleaned after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.fhir_engine import FhirEngine


@pytest.fixture
def engine(fhir_engine: FhirEngine) -> Iterator[FhirEngine]:
    """The session's engine with faults, statistics and auth reset after the test."""
    fhir_engine.reset()
    yield fhir_engine
    fhir_engine.configure_auth(require=False)
    fhir_engine.reset()
