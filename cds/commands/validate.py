"""``mprtm validate``: local validation of a checkpoint on a site's labelled patients.

Writes ``REPORT_DIR/validation.json`` (layout in ``docs/local-validation.md``) and
``validation.html`` (one self-contained page).  Patients the checkpoint trained,
validated or was recalibrated on are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from cds.config import Settings
from cds.errors import UsageError
from cds.model_data import add_load_workers_argument, add_site_label_arguments


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="local validation report of a checkpoint on site data")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="cohort folder")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    p.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR")
    add_site_label_arguments(p)
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples for CIs")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    add_load_workers_argument(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace, settings: Settings) -> int:

    from cds.commands._site import label_matrix, site_scoring, subgroups
    from model._validation_html import plots, render
    from model.checkpoint import file_sha256
    from model.evaluate import score_examples
    from model.maggic import maggic_one_year_mortality
    from model.types import MODALITIES
    from model.validation import CITL_LIMIT, RATIO_BAND, shift_rows, validation_report

    if args.bootstrap < 0 or args.threads < 0:
        raise UsageError("--bootstrap and --threads must be >= 0")
    pred, examples = site_scoring(
        args, settings, minimum=10, what="labelled patients the checkpoint has not seen"
    )
    ck = pred.checkpoint
    p, _, data = score_examples(pred, examples, not args.quiet)
    y = label_matrix(examples)
    mag = np.array([maggic_one_year_mortality(e.input.numeric) for e in examples], float)
    rep = validation_report(y, p, ck.thresholds, subgroups(examples), mag, args.bootstrap)
    ref = ck.metrics.get("training_reference")
    numeric = [e.input.numeric for e in examples]
    present = data["present"].numpy()
    rep["shift"] = shift_rows(numeric, ref) if ref else []
    rep["modalities"] = {
        m: {
            "missing_site": float(1 - present[:, j].mean()),
            "missing_train": (ref or {}).get("modalities_missing", {}).get(m),
        }
        for j, m in enumerate(MODALITIES)
    }
    rep["n_patients"] = len(examples)
    rep["as_of"] = args.as_of.isoformat() if args.as_of else None
    rep["limits"] = {"flag_rate_ratio": list(RATIO_BAND), "citl": CITL_LIMIT}
    rep["checkpoint"] = {
        "sha256": file_sha256(args.checkpoint),
        "created": ck.created,
        "synthetic": ck.synthetic_training_data,
        "provenance": ck.metrics.get("provenance"),
        "validation": ck.metrics.get("val", {}).get("fusion", {}),
    }
    if not ref:
        rep["notes"] = ["the checkpoint carries no training reference: no shift table"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validation.json").write_text(json.dumps(rep, indent=2) + "\n", "utf-8")
    (args.out / "validation.html").write_text(render(rep, plots(rep, y, p)), "utf-8")
    lines = [f"wrote {args.out}/validation.json and validation.html ({len(examples)} patients)"]
    for o, m in rep["overall"].items():
        lo, hi = m.get("auroc_ci") or [float("nan")] * 2
        lines.append(
            f"  {o:<30} AUROC {m['auroc']:.3f} [{lo:.3f}, {hi:.3f}]  ECE {m['ece']:.3f}  "
            f"CITL {m['calibration_intercept']:+.2f}  slope {m['calibration_slope']:.2f}"
        )
    flagged = [r for r in rep["subgroups"] if r["flagged"] or r["calibration_flagged"]]
    lines.append(f"  subgroups marked: {len(flagged)} of {len(rep['subgroups'])}")
    print("\n".join(lines))
    return 0
