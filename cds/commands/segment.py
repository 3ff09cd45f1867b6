"""``mprtm segment``: segment one LGE series from a folder or the configured PACS.

    mprtm segment SERIES_DIR --checkpoint CKPT --out DIR [--series-uid UID]
    mprtm segment --series-uid UID --checkpoint CKPT --out DIR     # from [pacs]

Writes masks (NIfTI and DICOM SEG), an overlay PNG per slice and ``result.json`` with
burden, quality, usable and reason (:mod:`cds.segment`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "segment", help="segment one LGE series (folder or PACS): masks, overlays, burden JSON"
    )
    p.add_argument(
        "series_dir",
        nargs="?",
        type=Path,
        default=None,
        metavar="SERIES_DIR",
        help="DICOM folder of the series (without it: --series-uid from the [pacs] source)",
    )
    p.add_argument(
        "--series-uid",
        default=None,
        metavar="UID",
        help="SeriesInstanceUID: picks the series in SERIES_DIR, or fetches it from [pacs]",
    )
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    p.set_defaults(handler=_handler)


def _from_folder(folder: Path, uid: str | None) -> list[Any]:
    from cds.site_masks import mr_series
    from connectors.pacs.folder import DicomFolderSource

    if not folder.is_dir():
        raise UsageError(f"SERIES_DIR not found: {folder}")
    source = DicomFolderSource(folder)
    refs = mr_series(source)
    if uid is not None:
        if uid not in refs:
            raise UsageError(f"series {uid} is not in {folder}")
        return source.retrieve_series(refs[uid])
    if len(refs) != 1:
        raise UsageError(
            f"{folder} holds {len(refs)} MR series; name one with --series-uid"
            if refs
            else f"{folder} holds no MR series"
        )
    return source.retrieve_series(next(iter(refs.values())))


def _from_pacs(settings: Settings, uid: str) -> list[Any]:
    from cds.site_masks import mr_series
    from cds.sources import make_imaging_source
    from connectors.pacs.dimse import DimseSource
    from connectors.pacs.folder import DicomFolderSource

    source = make_imaging_source(settings)
    try:
        if isinstance(source, DimseSource):
            ref = source.find_series_by_uid(uid)
        elif isinstance(source, DicomFolderSource):
            ref = mr_series(source).get(uid)
        else:
            raise UsageError(
                f"pacs.source = {settings.pacs.source!r}: segment by UID needs 'dimse' or "
                "'folder' (or pass SERIES_DIR)"
            )
        if ref is None:
            raise UsageError(f"series {uid} not found in the [pacs] source")
        return source.retrieve_series(ref)
    finally:
        source.close()


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.image_gate import quality_rules
    from cds.segment import segment_series
    from connectors.errors import ConnectorError, DicomInvalid
    from model.errors import ModelError
    from model.predictor import Predictor

    if args.threads < 0:
        raise UsageError("--threads must be >= 0")
    if args.series_dir is None and args.series_uid is None:
        raise UsageError("give SERIES_DIR or --series-uid (fetched from the [pacs] source)")
    rules = quality_rules(settings)
    try:
        predictor = Predictor.from_checkpoint(
            args.checkpoint,
            device=args.device,
            threads=args.threads,
            attribution=False,
            quality_rules=rules,
        )
    except (ModelError, ValueError) as exc:
        raise UsageError(f"--checkpoint: {exc}") from exc
    try:
        if args.series_dir is not None:
            datasets = _from_folder(args.series_dir, args.series_uid)
        else:
            datasets = _from_pacs(settings, args.series_uid)
        result = segment_series(predictor, datasets, args.out)
    except (DicomInvalid, ModelError) as exc:
        raise UsageError(f"cannot segment: {exc}") from exc
    except ConnectorError as exc:
        raise UsageError(f"cannot fetch the series: {exc}") from exc
    burden = result["burden"]
    shown = "n/a" if burden is None else f"{burden:.3f}"
    verdict = "usable" if result["usable"] else f"NOT usable: {result['reason']}"
    print(
        f"series {result['series_instance_uid']}: burden {shown}, quality "
        f"{result['quality']}, {verdict}; wrote {args.out}"
    )
    return 0
