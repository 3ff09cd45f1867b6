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

from cds.config import Settings
from cds.errors import ConfigError
from connectors.fhir.base import FhirSource
from connectors.pacs.base import ImagingSource

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
    raise ConfigError(f"fhir.source = {kind!r} is not available in this build")


def make_imaging_source(settings: Settings) -> ImagingSource:
    """The imaging source of ``pacs.source``.

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
    raise ConfigError(f"pacs.source = {kind!r} is not available in this build")


def folder_index_cache(settings: Settings, folder: str | Path) -> Path:
    """Where the DICOM folder source keeps its header index for ``folder``
    (``pacs.cache_dir``/folder-index-<hash of the folder's absolute path>.json)."""
    key = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    return Path(settings.pacs.cache_dir) / f"folder-index-{key}.json"


def expand_cohort(cohort: str, as_of: dt.date) -> str:
    """Replace ``{as_of}``, ``{as_of-30d}``, ``{as_of+7d}`` by ISO dates.

    ``search:Patient?_has:Encounter:patient:date=ge{as_of-30d}`` is every patient with an
    encounter ongoing or ended in the last 30 days, on any source.
    """

    def sub(m: re.Match[str]) -> str:
        days = int(m.group(2) or 0) * (-1 if m.group(1) == "-" else 1)
        return (as_of + dt.timedelta(days=days)).isoformat()

    return _PLACEHOLDER.sub(sub, cohort)
