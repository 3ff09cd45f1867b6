"""Pure helpers of the HTTP layer: Retry-After, OperationOutcome text, URL redaction."""

from __future__ import annotations

import email.utils

from connectors.fhir._http import outcome_text, parse_retry_after, redact_url


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == 30.0
    assert parse_retry_after(email.utils.formatdate(999_000, usegmt=True), now=1_000_000) == 0.0


def test_outcome_text_quotes_diagnostics_and_expressions() -> None:
    oo = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "structure",
                "details": {"text": "Missing required"},
                "expression": ["Observation.status"],
            },
            {"severity": "warning", "code": "processing", "diagnostics": "slow"},
        ],
    }
    assert outcome_text(oo) == (
        "error structure: Missing required [Observation.status]; warning processing: slow"
    )
    assert outcome_text({"resourceType": "Patient"}) == ""
    assert (
        len(
            outcome_text(
                {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "x" * 2000}]}
            )
        )
        == 500
    )


def test_redact_url_drops_query_and_credentials() -> None:
    url = "https://user:pw@ehr.example.org:8443/fhir/Patient?name=Smith&birthdate=1950-01-01"
    assert redact_url(url) == "https://ehr.example.org:8443/fhir/Patient"
