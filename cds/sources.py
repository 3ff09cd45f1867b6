"""The configured FHIR and imaging sources (one small dispatch each).

Each branch imports its connector lazily, so a deployment only loads what it uses and a
new source is a two-line addition here.  Also: the cohort placeholders
(``{as_of}``, ``{as_of-30d}``) that make a relative ``search:`` cohort possible for every
source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from cds.config import PacsSettings, Settings
from cds.errors import ConfigError
from connectors.fhir.base import FhirSource
from connectors.pacs.base import ImagingSource

if TYPE_CHECKING:
    from connectors.fhir.rest import FhirRestSource
    from connectors.pacs.factory import NetworkSourceParams

_PLACEHOLDER = re.compile(r"\{as_of(?:([+-])(\d+)d)?\}")


def make_fhir_source(settings: Settings) -> FhirSource:
    """The FHIR source of ``fhir.source``.

    Raises:
        ConfigError: the source cannot be opened with these settings (names the key).
    """
    kind = settings.fhir.source
    if kind == "ndjson":
        from connectors.errors import FhirError
        from connectors.fhir.ndjson import NdjsonFolderSource

        try:
            return NdjsonFolderSource(settings.fhir.ndjson_dir)
        except FhirError as exc:
            raise ConfigError(f"fhir.ndjson_dir: {exc}") from None
    if kind == "server":
        return make_fhir_rest_source(settings)
    raise ConfigError(f"fhir.source = {kind!r} is not available in this build")


def make_fhir_rest_source(settings: Settings) -> FhirRestSource:
    """A REST source for ``fhir.base_url`` (``fhir.source = "server"`` and FHIR write-back),
    authenticated as ``fhir.auth`` says; it reads the CapabilityStatement at once.

    Raises:
        ConfigError: missing base URL or unusable credentials (names the key).
        connectors.errors.FhirError: the server cannot be reached or is not FHIR R4.
    """
    from connectors.errors import FhirAuthError
    from connectors.fhir.rest import from_settings

    f = settings.fhir
    if not f.base_url:
        raise ConfigError("fhir.base_url must be set for a FHIR server source or write-back")
    try:
        return from_settings(
            base_url=f.base_url,
            auth=f.auth,
            token_url=f.token_url,
            client_id=f.client_id,
            private_key_file=f.private_key_file,
            key_alg=f.key_alg,
            key_id=f.key_id,
            scope=f.scope,
            bearer_token=f.bearer_token,
            timeout_s=f.timeout_s,
            max_concurrency=f.max_concurrency,
            max_retries=f.max_retries,
            backoff_s=f.retry_backoff_s,
            max_wait_s=f.max_retry_wait_s,
            page_size=f.page_size,
        )
    except FhirAuthError as exc:
        if exc.status is None:  # a configuration problem, not a refusal by the server
            raise ConfigError(f"[fhir] auth = {f.auth!r}: {exc}") from None
        raise


def make_imaging_source(settings: Settings) -> ImagingSource:
    """The imaging source of ``pacs.source``: a DICOM folder, or a PACS over DIMSE
    (C-FIND + C-GET/C-MOVE; a C-MOVE source runs our Storage SCP until closed) or
    DICOMweb (QIDO-RS/WADO-RS).  Close it after use.

    Raises:
        ConfigError: the source cannot be opened with these settings (names the key).
    """
    kind = settings.pacs.source
    if kind == "folder":
        from connectors.errors import DicomInvalid
        from connectors.pacs.folder import DicomFolderSource

        try:
            return DicomFolderSource(
                settings.pacs.folder, index_cache=folder_index_cache(settings, settings.pacs.folder)
            )
        except DicomInvalid as exc:
            raise ConfigError(f"pacs.folder: {exc}") from None
    if kind in ("dimse", "dicomweb"):
        from connectors.errors import PacsError, StorageScpError
        from connectors.pacs.factory import open_network_source

        params = network_params(settings.pacs)
        try:
            return open_network_source(params)
        except StorageScpError as exc:
            raise ConfigError(f"pacs.storage_port / pacs.storage_bind: {exc}") from None
        except (ValueError, PacsError) as exc:
            raise ConfigError(f"[pacs]: {exc}") from None
    raise ConfigError(f"pacs.source = {kind!r} is not available in this build")


def folder_index_cache(settings: Settings, folder: str | Path) -> Path:
    """Where the DICOM folder source keeps its header index for ``folder``
    (``pacs.cache_dir``/folder-index-<hash of the folder's absolute path>.json)."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    return Path(settings.pacs.cache_dir) / f"folder-index-{key}.json"


def network_params(pacs: PacsSettings) -> NetworkSourceParams:
    """The connector parameters of a DIMSE or DICOMweb ``[pacs]`` section.

    Raises:
        ConfigError: naming the key that cannot work.
    """
    from connectors.pacs.factory import NetworkSourceParams

    if pacs.source not in ("dimse", "dicomweb"):
        raise ConfigError(f"pacs.source {pacs.source!r} is not a network source")
    if pacs.source == "dicomweb" and not pacs.dicomweb_url:
        raise ConfigError("pacs.dicomweb_url is required when pacs.source = 'dicomweb'")
    if pacs.source == "dicomweb" and pacs.dicomweb_auth == "bearer" and not pacs.dicomweb_token:
        raise ConfigError(
            "pacs.dicomweb_auth = 'bearer' needs MPRTM_PACS__DICOMWEB_TOKEN in the environment"
        )
    if pacs.source == "dimse" and pacs.retrieve == "move" and not pacs.allowed_peers:
        raise ConfigError("pacs.allowed_peers must name the PACS' AE title for retrieve = 'move'")
    for key in ("called_aet", "calling_aet"):
        value = getattr(pacs, key)
        if pacs.source == "dimse" and not 0 < len(value) <= 16:
            raise ConfigError(f"pacs.{key} must be an AE title of 1-16 characters, got {value!r}")
    return NetworkSourceParams(
        kind=pacs.source,
        cache_dir=pacs.cache_dir,
        host=pacs.host,
        port=pacs.port,
        called_aet=pacs.called_aet,
        calling_aet=pacs.calling_aet,
        retrieve=pacs.retrieve,
        storage_port=pacs.storage_port,
        storage_bind=pacs.storage_bind,
        allowed_peers=pacs.allowed_peers,
        assoc_timeout_s=pacs.assoc_timeout_s,
        dimse_timeout_s=pacs.dimse_timeout_s,
        network_timeout_s=pacs.network_timeout_s,
        max_retries=pacs.max_retries,
        retry_backoff_s=pacs.retry_backoff_s,
        dicomweb_url=pacs.dicomweb_url,
        dicomweb_auth=pacs.dicomweb_auth,
        dicomweb_username=pacs.dicomweb_username,
        dicomweb_password=pacs.dicomweb_password,
        dicomweb_token=pacs.dicomweb_token,
        dicomweb_timeout_s=pacs.dicomweb_timeout_s,
        tls=pacs.tls,
        tls_ca_file=pacs.tls_ca_file,
        tls_cert_file=pacs.tls_cert_file,
        tls_key_file=pacs.tls_key_file,
    )


def expand_cohort(cohort: str, as_of: dt.date) -> str:
    """Replace ``{as_of}``, ``{as_of-30d}``, ``{as_of+7d}`` by ISO dates.

    ``search:Patient?_has:Encounter:patient:date=ge{as_of-30d}`` is every patient with an
    encounter ongoing or ended in the last 30 days, on any source.
    """

    def sub(m: re.Match[str]) -> str:
        days = int(m.group(2) or 0) * (-1 if m.group(1) == "-" else 1)
        return (as_of + dt.timedelta(days=days)).isoformat()

    return _PLACEHOLDER.sub(sub, cohort)
