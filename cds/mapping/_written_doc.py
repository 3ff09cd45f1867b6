"""The section of ``docs/fhir-mapping.md`` on what the service writes (generated from the
constants of :mod:`cds.batch.fhir_out` and :mod:`cds.canonical`, so it never drifts)."""

from __future__ import annotations

from cds.batch.fhir_out import (
    LOW_BELOW,
    MODERATE_UP_TO,
    NEGLIGIBLE_BELOW,
    OUTCOME_CODES,
    RISK_PROBABILITY,
    SNOMED,
    TIER_DISPLAY,
)
from cds.canonical import Canonical

_BASE = "<base>"


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def written_section() -> str:
    c = Canonical(_BASE)
    rows = "\n".join(
        f"| `{code}` | {display} | " + (f"`{SNOMED}` `{sct}`" if sct else "-") + " |"
        for code, (display, sct) in OUTCOME_CODES.items()
    )
    tiers = ", ".join(f"`{k}` ({v})" for k, v in TIER_DISPLAY.items())
    return f"""\
## What the service writes back

Each nightly run writes one `RiskAssessment` per patient and one `Device` per model version
(docs/deployment.md); CDS Hooks cards carry codes of the service's own too
(docs/cds-hooks.md).  The service's own code systems, extension and identifier systems
are URLs under one canonical base, `fhir.canonical_base` (empty: `<server.public_url>/fhir`,
where `GET /fhir/CodeSystem/<name>` serves the CodeSystem resources).  Set it once:
resources written under one base are not found again by identifier under another.

| what | system |
|---|---|
| RiskAssessment identifier (`<model version>:<patient id>:<run date>`) | `{c.ra_identifier}` |
| Device identifier (model version) | `{c.device_identifier}` |
| `RiskAssessment.code`, `.method` (assessment, model name and version) | `{c.model}` |
| `prediction.outcome` (with SNOMED CT where a concept exists) | `{c.outcome}` |
| product risk tier, extension `{c.risk_tier_extension}` on each prediction | `{c.risk_tier}` |
| `prediction.qualitativeRisk` | `{RISK_PROBABILITY}` |
| CDS Hooks card `source.topic` | `{c.card_topic}` |
| CDS Hooks card `overrideReasons` | `{c.override_reason}` |
| suggested `ServiceRequest.code` | `{c.suggested_order}` |

| outcome code | display | SNOMED CT |
|---|---|---|
{rows}

`prediction.qualitativeRisk` reads the HL7 risk-probability CodeSystem by its definitions:
`negligible` ("exceptionally unlikely") below {_pct(NEGLIGIBLE_BELOW)}, `low` ("possible but
unlikely") below {_pct(LOW_BELOW)}, `moderate` ("a reasonable likelihood of occurrence") up to
{_pct(MODERATE_UP_TO)}, `high` ("more likely to occur than not") above {_pct(MODERATE_UP_TO)};
`certain` is never claimed.  A 31% one-year death risk is therefore `moderate` there, while
the product's own tier from the site's thresholds (`[risk]`, or the checkpoint's), one of
{tiers}, is carried apart in the risk-tier extension, and on cards and in the inbox.

Every RiskAssessment and Device is checked against FHIR R4 (4.0.1) with the R4 models of
`fhirclient` before it is written (fhir.resources 8 has R4B and R5 only).
"""
