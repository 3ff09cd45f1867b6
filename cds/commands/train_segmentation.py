"""``mprtm train-segmentation``: fine-tune the image network on a site's expert contours.

Reads the site's LGE series (a DICOM folder) and their masks (DICOM SEG or NIfTI, see
:mod:`cds.site_masks`), continues stage 1 from ``--init`` (:mod:`model.finetune`) and
writes a new checkpoint with its provenance in the metrics and the model card.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import MaskFileError, UsageError

log = logging.getLogger("mprtm.cli")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train-segmentation",
        help="fine-tune the image network on a site's expert contours (DICOM SEG or NIfTI)",
    )
    p.add_argument("--series", required=True, type=Path, metavar="DIR", help="DICOM folder")
    p.add_argument(
        "--masks", required=True, type=Path, metavar="DIR", help="DICOM SEG and/or NIfTI masks"
    )
    p.add_argument("--init", required=True, type=Path, metavar="CKPT", help="checkpoint to start")
    p.add_argument("--out", required=True, type=Path, metavar="NEW_CKPT", help="new checkpoint")
    p.add_argument("--epochs", type=int, default=15, metavar="N", help="epochs (default 15)")
    p.add_argument(
        "--lr", type=float, default=None, metavar="LR", help="peak learning rate (default: init's)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from cds.site_masks import load_site_data
    from connectors.errors import DicomInvalid
    from model.checkpoint import file_sha256, load_checkpoint
    from model.errors import ModelError
    from model.finetune import fine_tune_segmentation

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    if args.threads < 0:
        raise UsageError("--threads must be >= 0")
    if args.epochs <= 0:
        raise UsageError("--epochs must be > 0")
    if args.lr is not None and args.lr <= 0:
        raise UsageError("--lr must be > 0")
    if args.out.resolve() == args.init.resolve():
        raise UsageError("--out must differ from --init: a fine-tuned model is a new version")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        init = load_checkpoint(args.init)
    except ModelError as exc:
        raise UsageError(f"--init: {exc}") from exc
    try:
        site = load_site_data(args.series, args.masks, init.config.input_size)
    except DicomInvalid as exc:
        raise MaskFileError(f"--series: {exc}") from exc
    if not site.examples:
        raise UsageError(f"no mask in {args.masks} matched a series in {args.series}")
    try:
        res = fine_tune_segmentation(
            init,
            site.examples,
            init_sha256=file_sha256(args.init),
            masks_fingerprint=site.fingerprint,
            counts=site.counts,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
            out=args.out,
            progress=not args.quiet,
        )
    except ModelError as exc:
        raise UsageError(f"cannot fine-tune: {exc}") from exc
    rep = res.report
    before, after = rep["held_out_dice_before"], rep["held_out_dice_after"]

    def dice(d: dict[str, float], key: str) -> str:
        return f"{d[key]:.3f}" if key in d else "n/a"

    print(
        f"wrote {res.path} ({rep['series_train']} training / {rep['series_held_out']} held-out "
        f"series, {site.counts['slices_annotated']} annotated slices, {rep['seconds']:.0f} s); "
        f"held-out Dice myocardium {dice(before, 'dice_myocardium')} -> "
        f"{dice(after, 'dice_myocardium')}, enhancement {dice(before, 'dice_enhancement')} -> "
        f"{dice(after, 'dice_enhancement')}"
    )
    return 0
