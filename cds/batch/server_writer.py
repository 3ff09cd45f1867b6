"""Write-back to the FHIR server: conditional update by identifier (idempotent).

``PUT RiskAssessment?identifier=<canonical base>/identifier/riskassessment|<value>``
creates the resource the first time and updates the same one on a re-run; the model's
Device is written the same way once per process.
"""

from __future__ import annotations

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment

from cds.batch.writeback import WritebackError, _identifier
from cds.config import Settings
from connectors.errors import FhirError
from connectors.fhir.rest import FhirRestClient


class ServerWriter:
    """Args: client: an authenticated FHIR REST client of the EHR."""

    def __init__(self, client: FhirRestClient, owner: object | None = None) -> None:
        self.client = client
        self._owner = owner
        self._devices: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerWriter:
        from cds.sources import make_fhir_rest_source

        source = make_fhir_rest_source(settings)
        return cls(source.client, owner=source)

    def ensure_device(self, device: Device) -> str:
        system, ident = _identifier(device)
        if ident not in self._devices:
            try:
                res = self.client.conditional_update(device, system, ident)
            except FhirError as exc:
                raise WritebackError(f"Device {ident}: {exc}") from exc
            self._devices[ident] = f"Device/{res.id}"
        return self._devices[ident]

    def write(self, ra: RiskAssessment) -> str:
        system, ident = _identifier(ra)
        try:
            res = self.client.conditional_update(ra, system, ident)
        except FhirError as exc:
            raise WritebackError(f"RiskAssessment {ident}: {exc}") from exc
        return str(res.id)

    def finish(self) -> None:
        return None

    def close(self) -> None:
        close = getattr(self._owner, "close", None)
        if close is not None:
            close()
