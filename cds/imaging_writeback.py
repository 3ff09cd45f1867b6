"""Imaging results written back to the PACS (``[pacs] writeback``).

The batch calls :meth:`ResultsWriter.write` once per newly segmented LGE series (a
series whose features were just computed under this model version).  The writer
retrieves the series' instances again (from the imaging source's cache when it has
one), orders them as the pipeline did, checks that they are the slices the model saw,
builds the SEG and SR (:mod:`cds.imaging_results`), puts them in the outbox and drains
the outbox to the PACS (:mod:`connectors.pacs.writeback`).

A series that the image quality gate refused gets nothing: no SEG and no SR, so its
segmentation never reaches a viewer (the card and the inbox already say "MRI could not
be analysed").  A failure here (PACS down, a source the SEG cannot reference) never
fails the patient's scoring: it is logged with ids only and counted; instances that were
built but not stored stay in the outbox and go with the next send.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from cds.config import Settings
from cds.errors import ConfigError
from cds.imaging_results import ImagingResultsError, build_results
from cds.mapping import MappedPatient
from connectors.errors import PacsError
from connectors.pacs._frames import is_multiframe
from connectors.pacs.base import ImagingSource
from connectors.pacs.series import order_slices
from connectors.pacs.writeback import DimseSender, Outbox, Sender, StowSender
from model.types import ImageFeatures

log = logging.getLogger("mprtm.imaging_writeback")


@dataclass
class WritebackCounts:
    """What the writer did in this process."""

    written: int = 0  # series whose SEG and SR the PACS stored
    pending: int = 0  # series whose instances wait in the outbox
    not_usable: int = 0  # series refused by the quality gate: nothing written
    failed: int = 0  # series whose results could not be built
    errors: list[str] = field(default_factory=list)


class ResultsWriter:
    """Builds and sends one series' SEG and SR.

    Args:
        outbox: the outbox and its sender.
        imaging: where the source instances are retrieved from.
        model_name: the algorithm's name.
        model_version: the model version (algorithm version; part of every UID).
        secondary_capture: also send the RGB overlay series.
    """

    def __init__(
        self,
        outbox: Outbox,
        imaging: ImagingSource,
        *,
        model_name: str,
        model_version: str,
        secondary_capture: bool = False,
    ) -> None:
        self.outbox = outbox
        self.imaging = imaging
        self.model_name = model_name
        self.model_version = model_version
        self.secondary_capture = secondary_capture
        self.counts = WritebackCounts()

    def write(self, mapped: MappedPatient, features: ImageFeatures) -> str:
        """Write the results of ``mapped``'s LGE series; never raises.

        Returns:
            "written", "pending" (kept in the outbox), "not usable", or "failed: <why>".
        """
        series = mapped.lge_series
        uid = series.series_instance_uid if series is not None else "?"
        if not features.usable:
            self.counts.not_usable += 1
            return "not usable"
        try:
            if series is None or features.segmentation is None:
                raise ImagingResultsError(f"series {uid}: no segmentation to write")
            datasets = self.imaging.retrieve_series(series)
            if any(is_multiframe(ds) for ds in datasets):
                raise ImagingResultsError(f"series {uid}: multi-frame sources are not supported")
            ordered, _ = order_slices(datasets)
            if tuple(str(ds.SOPInstanceUID) for ds in ordered) != mapped.sop_instance_uids:
                raise ImagingResultsError(f"series {uid}: instances changed since it was scored")
            results = build_results(
                ordered,
                features.segmentation,
                usable=features.usable,
                burden=features.fibrosis_burden,
                model_name=self.model_name,
                model_version=self.model_version,
                secondary_capture=self.secondary_capture,
            )
            paths = set(self.outbox.put(results.datasets()))
        except (ImagingResultsError, PacsError, OSError) as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning(
                "PACS write-back of series %s (patient %s) failed: %s",
                uid,
                mapped.patient_id,
                reason,
            )
            self.counts.failed += 1
            self.counts.errors.append(reason[:300])
            return f"failed: {reason}"
        summary = self.outbox.flush()
        if paths & {f.path for f in summary.failures}:
            self.counts.pending += 1
            return "pending"
        self.counts.written += 1
        return "written"

    def close(self) -> None:
        self.outbox.close()


def make_results_writer(
    settings: Settings, imaging: ImagingSource | None, *, model_name: str, model_version: str
) -> ResultsWriter | None:
    """The writer of ``[pacs] writeback``, or None when it is "none" or there is no
    imaging source.

    Raises:
        ConfigError: write-back keys that cannot work (names the key).
    """
    pacs = settings.pacs
    if pacs.writeback == "none" or imaging is None:
        return None
    from cds.sources import network_params
    from connectors.pacs.factory import make_peer

    params = network_params(dataclasses.replace(pacs, source=pacs.writeback))
    sender: Sender
    try:
        if pacs.writeback == "dimse":
            sender = DimseSender(make_peer(params))
        else:
            from connectors.pacs._retry import RetryPolicy

            sender = StowSender(
                params.dicomweb_url,
                auth=params.dicomweb_auth,
                username=params.dicomweb_username,
                password=params.dicomweb_password,
                token=params.dicomweb_token,
                timeout_s=params.dicomweb_timeout_s,
                retry=RetryPolicy(max_retries=params.max_retries, backoff_s=params.retry_backoff_s),
            )
        outbox = Outbox(pacs.writeback_outbox, sender)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"[pacs] writeback = {pacs.writeback!r}: {exc}") from None
    return ResultsWriter(
        outbox,
        imaging,
        model_name=model_name,
        model_version=model_version,
        secondary_capture=pacs.writeback_secondary_capture,
    )
