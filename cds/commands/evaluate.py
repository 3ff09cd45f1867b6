"""``mprtm evaluate``: test a checkpoint on the held-out patients of a cohort folder.

Writes ``REPORT_DIR/metrics.json`` (fusion, single-modality models, logistic regression,
MAGGIC and, for synthetic data, the oracle), ``extras.json`` (paired AUROC differences,
modality-drop degradation), ``report.md`` and PNG plots (ROC, calibration, Dice).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError
from cds.model_data import add_load_workers_argument, load_model_examples, load_workers


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on held-out patients")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="cohort folder")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples for CIs")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    add_load_workers_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from model.checkpoint import load_checkpoint
    from model.errors import ModelError
    from model.evaluate import evaluate_checkpoint

    if args.bootstrap < 0 or args.threads < 0:
        raise UsageError("--bootstrap and --threads must be >= 0")
    try:
        cfg = load_checkpoint(args.checkpoint).config
    except ModelError as exc:
        raise UsageError(f"--checkpoint: {exc}") from exc
    workers = load_workers(args.load_workers, args.threads)
    examples = load_model_examples(args.data, cfg.input_size, settings, not args.quiet, workers)
    try:
        metrics = evaluate_checkpoint(
            args.checkpoint, examples, args.out, args.bootstrap, not args.quiet, args.threads
        )
    except ModelError as exc:
        raise UsageError(f"cannot evaluate: {exc}") from exc
    lines = [f"wrote {args.out}/metrics.json and report.md ({metrics['n_test']} test patients)"]
    for name, per in metrics.items():
        if isinstance(per, dict) and "death" in per:
            d = per["death"]
            lo, hi = d.get("auroc_ci", [float("nan")] * 2)
            lines.append(f"  {name:17s} AUROC death {d['auroc']:.3f} [{lo:.3f}, {hi:.3f}]")
    print("\n".join(lines))
    return 0
