"""``mprtm evaluate``: test a checkpoint on the held-out patients of a cohort folder.

Writes ``REPORT_DIR/metrics.json`` (fusion, single-modality models, logistic regression,
MAGGIC and, for synthetic data, the oracle), ``extras.json`` (paired AUROC differences,
modality-drop degradation), ``report.md`` and PNG plots (ROC, calibration, Dice).

Both also carry the myocardium Dice on real anatomy: the Sunnybrook cine subset
(``cds/realdata/sunnybrook.py``; cine, not LGE, so anatomy and localisation only).
``--real-anatomy-only`` runs that part alone (no ``--data``) and writes
``REPORT_DIR/real_anatomy.json``, ``real_anatomy.md`` and ``real_anatomy.png`` (one slice
per patient: expert and predicted myocardium outlined).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError, ValidationDataError
from cds.model_data import (
    add_load_workers_argument,
    add_site_label_arguments,
    load_model_examples,
    load_workers,
)

log = logging.getLogger("mprtm.evaluate")


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint on held-out patients")
    p.add_argument("--data", type=Path, metavar="DIR", help="cohort folder (required unless "
                   "--real-anatomy-only)")  # fmt: skip
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples for CIs")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    p.add_argument(
        "--real-anatomy",
        type=Path,
        metavar="DIR",
        help="Sunnybrook-layout folder of real slices with expert contours (default: the "
        "subset in tests/data/sunnybrook of a source checkout; skipped when it is absent)",
    )
    p.add_argument("--no-real-anatomy", action="store_true", help="skip the real-anatomy Dice")
    p.add_argument(
        "--real-anatomy-only",
        action="store_true",
        help="only the myocardium Dice on the real-anatomy slices (quick; no --data)",
    )
    add_load_workers_argument(p)
    add_site_label_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handler)


def _real_anatomy(args: argparse.Namespace, size: int) -> Any:
    """The real-anatomy slices at ``size`` px, or None when skipped or (default folder
    only) absent."""
    from cds.realdata.sunnybrook import DEFAULT_DIR, load_sunnybrook

    if args.no_real_anatomy:
        return None
    folder = args.real_anatomy or DEFAULT_DIR
    if args.real_anatomy is None and not DEFAULT_DIR.is_dir():
        if args.real_anatomy_only:
            raise UsageError(f"no Sunnybrook subset at {folder}: pass --real-anatomy DIR")
        log.warning("no real-anatomy subset at %s: the report has no real-anatomy Dice", folder)
        return None
    try:
        return load_sunnybrook(size, folder)
    except ValidationDataError as exc:
        raise UsageError(f"--real-anatomy: {exc}") from exc


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    from model.checkpoint import load_checkpoint
    from model.errors import ModelError

    if args.bootstrap < 0 or args.threads < 0:
        raise UsageError("--bootstrap and --threads must be >= 0")
    if args.real_anatomy_only and args.no_real_anatomy:
        raise UsageError("--real-anatomy-only and --no-real-anatomy exclude each other")
    if args.data is None and not args.real_anatomy_only:
        raise UsageError("--data is required (unless --real-anatomy-only)")
    try:
        cfg = load_checkpoint(args.checkpoint).config
    except ModelError as exc:
        raise UsageError(f"--checkpoint: {exc}") from exc
    real = _real_anatomy(args, cfg.input_size)
    if args.real_anatomy_only:
        return _real_anatomy_only(args, real)
    from model.evaluate import evaluate_checkpoint

    workers = load_workers(args.load_workers, args.threads)
    if args.labels is not None and args.as_of is None:
        raise UsageError("--labels needs --as-of (the index date the labels count from)")
    examples = load_model_examples(
        args.data, cfg.input_size, settings, not args.quiet, workers, args.labels, args.as_of
    )
    try:
        metrics = evaluate_checkpoint(
            args.checkpoint,
            examples,
            args.out,
            args.bootstrap,
            not args.quiet,
            args.threads,
            real_anatomy=real,
        )
    except ModelError as exc:
        raise UsageError(f"cannot evaluate: {exc}") from exc
    lines = [f"wrote {args.out}/metrics.json and report.md ({metrics['n_test']} test patients)"]
    for name, per in metrics.items():
        if isinstance(per, dict) and "death" in per:
            d = per["death"]
            lo, hi = d.get("auroc_ci", [float("nan")] * 2)
            lines.append(f"  {name:17s} AUROC death {d['auroc']:.3f} [{lo:.3f}, {hi:.3f}]")
    if "real_anatomy" in metrics:
        lines.append(_summary(metrics["real_anatomy"]))
    print("\n".join(lines))
    return 0


def _summary(res: dict[str, Any]) -> str:
    ci = res["ci"] or [float("nan")] * 2
    return (
        f"  {res['name']}: Dice myocardium {res['dice']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
        f"({res['n_patients']} patients, {res['n_slices']} slices)"
    )


def _real_anatomy_only(args: argparse.Namespace, real: Any) -> int:
    from model.errors import ModelError
    from model.predictor import Predictor
    from model.real_anatomy import evaluate_real_anatomy, report_lines

    try:
        pred = Predictor.from_checkpoint(args.checkpoint, threads=args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        res = evaluate_real_anatomy(
            pred, real, args.bootstrap, figure=args.out / "real_anatomy.png"
        )
    except ModelError as exc:
        raise UsageError(f"cannot evaluate: {exc}") from exc
    (args.out / "real_anatomy.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    lines = [f"# M-PRTM real-anatomy check: checkpoint `{args.checkpoint.name}`", ""]
    (args.out / "real_anatomy.md").write_text("\n".join(lines + report_lines(res)), "utf-8")
    print(f"wrote {args.out}/real_anatomy.json, .md and .png\n{_summary(res)}")
    return 0
