"""The URLs of the code systems, extensions and identifier systems the service writes.

All live under one canonical base (``fhir.canonical_base``; empty = ``<server.public_url>/fhir``,
where the service itself serves its CodeSystem resources, see :mod:`cds.wellknown`).  Set it
once: resources written under one base are not found again by identifier under another.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds.config import ServerSettings, Settings

#: The base of a default configuration (``server.public_url`` of ServerSettings + /fhir).
DEFAULT_BASE = ServerSettings().public_url.rstrip("/") + "/fhir"


@dataclass(frozen=True)
class Canonical:
    """Args: base: the canonical base URL (no trailing slash)."""

    base: str = DEFAULT_BASE

    @property
    def outcome(self) -> str:
        return f"{self.base}/CodeSystem/outcome"

    @property
    def model(self) -> str:
        return f"{self.base}/CodeSystem/model"

    @property
    def risk_tier(self) -> str:
        return f"{self.base}/CodeSystem/risk-tier"

    @property
    def risk_tier_extension(self) -> str:
        return f"{self.base}/StructureDefinition/risk-tier"

    @property
    def card_topic(self) -> str:
        return f"{self.base}/CodeSystem/card-topic"

    @property
    def override_reason(self) -> str:
        return f"{self.base}/CodeSystem/card-override-reason"

    @property
    def suggested_order(self) -> str:
        return f"{self.base}/CodeSystem/suggested-order"

    @property
    def ra_identifier(self) -> str:
        return f"{self.base}/identifier/riskassessment"

    @property
    def device_identifier(self) -> str:
        return f"{self.base}/identifier/model-version"


def canonical(settings: Settings) -> Canonical:
    """The :class:`Canonical` of ``settings`` (``fhir.canonical_base`` or the public URL)."""
    base = settings.fhir.canonical_base or settings.server.public_url.rstrip("/") + "/fhir"
    return Canonical(base.rstrip("/"))
