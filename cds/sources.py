"""Build the configured data sources from :class:`~cds.config.Settings`.

``make_imaging_source(settings)`` returns the ``ImagingSource`` named by ``pacs.source``:
a DICOM folder, a PACS over DIMSE (C-FIND + C-GET/C-MOVE) or over DICOMweb.  Settings
that cannot work raise :class:`ConfigError` naming the key.
"""

from __future__ import annotations

from cds.config import PacsSettings, Settings
from cds.errors import ConfigError
from connectors.errors import StorageScpError
from connectors.pacs.base import ImagingSource
from connectors.pacs.factory import NetworkSourceParams, open_network_source


def network_params(pacs: PacsSettings) -> NetworkSourceParams:
    """The connector parameters of a DIMSE or DICOMweb ``[pacs]`` section."""
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
    )


def make_imaging_source(settings: Settings) -> ImagingSource:
    """The imaging source of ``settings.pacs``; close it after use.

    Raises:
        ConfigError: settings that cannot work (the message names the key), or our
            Storage SCP cannot listen on ``pacs.storage_port``.
    """
    pacs = settings.pacs
    if pacs.source == "folder":
        return _folder_source(pacs)
    params = network_params(pacs)
    try:
        return open_network_source(params)
    except ValueError as exc:
        raise ConfigError(f"[pacs] in {settings.source_file or '<defaults>'}: {exc}") from exc
    except StorageScpError as exc:
        raise ConfigError(f"pacs.storage_port / pacs.storage_bind: {exc}") from exc


def _folder_source(pacs: PacsSettings) -> ImagingSource:
    """The DICOM folder source (``connectors.pacs.folder``, built on branch h/pipeline)."""
    try:
        from connectors.pacs import folder as folder_mod  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ConfigError(
            "pacs.source = 'folder' needs connectors.pacs.folder, which is not installed"
        ) from exc
    source: ImagingSource = folder_mod.FolderSource(pacs.folder)
    return source
