"""``mprtm recalibrate``: logistic recalibration of a checkpoint on a site's patients.

Half of the labelled patients (``--fit-fraction``) fit the recalibration; the other half
measure its effect (ECE before and after, printed and stored).  The new checkpoint keeps
the parent's weights, records its provenance (parent sha256, site data fingerprint) in
its metrics and model card, and lists the fitting patients so that ``mprtm validate``
leaves them out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cds.config import Settings
from cds.errors import UsageError
from cds.model_data import add_load_workers_argument, add_site_label_arguments


def register(sub: Any) -> None:
    p = sub.add_parser("recalibrate", help="recalibrate a checkpoint on site data")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="cohort folder")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    p.add_argument("--out", required=True, type=Path, metavar="NEW_CKPT")
    add_site_label_arguments(p)
    p.add_argument("--fit-fraction", type=float, default=0.5, metavar="F",
                   help="share of patients fitted on (default 0.5)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the split")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    add_load_workers_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:

    from cds.commands._site import label_matrix, site_fingerprint, site_scoring
    from model.checkpoint import file_sha256, save_checkpoint
    from model.evaluate import score_examples
    from model.recalibrate import recalibrate

    if not 0.1 <= args.fit_fraction <= 1.0:
        raise UsageError("--fit-fraction must be between 0.1 and 1")
    if args.out.resolve() == args.checkpoint.resolve():
        raise UsageError("--out must differ from --checkpoint (a new model version)")
    pred, examples = site_scoring(args, settings, minimum=40, what="labelled patients")
    ck = pred.checkpoint
    _, logits, _ = score_examples(pred, examples, not args.quiet)
    y = label_matrix(examples)
    order = np.random.default_rng(args.seed).permutation(len(examples))
    fit = np.zeros(len(examples), bool)
    fit[order[: int(round(args.fit_fraction * len(examples)))]] = True
    new, figures = recalibrate(
        ck,
        file_sha256(args.checkpoint),
        logits,
        y,
        fit,
        site_fingerprint(examples),
        [e.input.patient_id for e, f in zip(examples, fit, strict=True) if f],
    )
    save_checkpoint(new, args.out)
    lines = [f"wrote {args.out} (fitted on {int(fit.sum())}, held out {int((~fit).sum())})"]
    for o, f in figures.items():
        if "slope" in f and f["ece_before"] is not None:
            lines.append(
                f"  {o:<30} slope {f['slope']:.2f} intercept {f['intercept']:+.2f}  ECE held "
                f"out {f['ece_before']:.4f} -> {f['ece_after']:.4f}"
            )
        else:
            lines.append(f"  {o:<30} {f.get('skipped', 'no held-out patients')}")
    print("\n".join(lines))
    return 0
