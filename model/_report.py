"""report.md and PNG plots of an evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model._plots import plot_calibration, plot_dice, plot_roc
from model.checkpoint import Checkpoint
from model.real_anatomy import report_lines
from model.types import OUTCOMES


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_report(
    out: Path,
    metrics: dict[str, Any],
    extras: dict[str, Any],
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    ck: Checkpoint,
) -> Path:
    """Write report.md plus roc_<outcome>.png, calibration_<outcome>.png and dice.png."""
    for j, o in enumerate(OUTCOMES):
        ok = ~np.isnan(y[:, j])
        if ok.sum() and 0 < y[ok, j].sum() < ok.sum():
            curves = {n: s[ok, j] for n, s in scores.items()}
            plot_roc(y[ok, j], curves, f"ROC: {o}", out / f"roc_{o}.png")
            plot_calibration(y[ok, j], curves, f"calibration: {o}", out / f"calibration_{o}.png")
    seg = extras.get("segmentation_per_patient", {})
    if seg.get("per_patient_myocardium"):
        plot_dice(
            {
                "myocardium": seg["per_patient_myocardium"],
                "enhancement": seg["per_patient_enhancement"],
            },
            out / "dice.png",
        )
    lines = [
        "# M-PRTM evaluation",
        "",
        f"- Test patients (never used in training or validation): {metrics['n_test']}",
        f"- Checkpoint preset `{ck.config.preset}`, created {ck.created}, "
        f"data fingerprint `{ck.data_fingerprint[:16]}`",
        f"- Synthetic training data: {'yes' if ck.synthetic_training_data else 'no'}",
        "",
        "## Discrimination and calibration",
        "",
    ]
    models = [m for m in metrics if m not in ("segmentation", "n_test", "real_anatomy")]
    for o in OUTCOMES:
        lines += [f"### {o}", "", "| model | AUROC | 95% CI | AUPRC | Brier | ECE | "
                  "AUROC fusion - model (95% CI) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m in models:
            r = metrics[m].get(o)
            if r is None:
                continue
            ci = r.get("auroc_ci", [None, None])
            diff = extras["paired_auroc_difference_vs_fusion"].get(m, {}).get(o)
            d = "" if diff is None else f"[{_fmt(diff[0])}, {_fmt(diff[1])}]"
            lines.append(
                f"| {m} | {_fmt(r['auroc'])} | [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
                f"{_fmt(r['auprc'])} | {_fmt(r['brier'])} | {_fmt(r['ece'])} | {d} |"
            )
        lines.append("")
    s = metrics["segmentation"]
    lines += [
        "## Segmentation (test split, pooled over pixels)",
        "",
        f"- Dice myocardium (labels 1+2): {_fmt(s['dice_myocardium'])}",
        f"- Dice enhancement (label 2): {_fmt(s['dice_enhancement'])}",
        f"- Fibrosis burden MAE: {_fmt(s['burden_mae'])}",
        "",
        *(report_lines(metrics["real_anatomy"]) if "real_anatomy" in metrics else []),
        "## Modality dropped at inference (fusion network)",
        "",
        "| dropped | patients affected | " + " | ".join(f"AUROC {o}" for o in OUTCOMES) + " |",
        "|---|---|" + "---|" * len(OUTCOMES),
    ]
    full = metrics["fusion"]
    lines.append(
        "| none | 0 | " + " | ".join(_fmt(full.get(o, {}).get("auroc")) for o in OUTCOMES) + " |"
    )
    for name, r in extras["modality_drop"].items():
        cells = " | ".join(_fmt(r["metrics"].get(o, {}).get("auroc")) for o in OUTCOMES)
        lines.append(f"| {name.removeprefix('without_')} | {r['patients_affected']} | {cells} |")
    mw = extras["mean_modality_weights"]
    cov = extras["modality_coverage"]
    lines += [
        "",
        "Mean modality weights (fusion attention): "
        + ", ".join(f"{k} {v:.3f}" for k, v in mw.items()),
        "; coverage: " + ", ".join(f"{k} {v:.0%}" for k, v in cov.items()),
    ]
    members = extras.get("ensemble_members")
    if members:
        lines += [
            "",
            f"Ensemble of {len(members)} fusion networks; each member alone (test AUROC):",
            "",
            "| member | " + " | ".join(OUTCOMES) + " |",
            "|---|" + "---|" * len(OUTCOMES),
        ]
        for k, r in enumerate(members, 1):
            lines.append(f"| {k} | " + " | ".join(_fmt(r.get(o)) for o in OUTCOMES) + " |")
        lines.append(
            "| ensemble | "
            + " | ".join(_fmt(full.get(o, {}).get("auroc")) for o in OUTCOMES)
            + " |"
        )
    mc = extras.get("modality_contributions")
    if mc:
        lines += [
            "",
            "Shapley contributions of each modality to the calibrated probability "
            "(percentage points; mean |contribution| / mean; the reference is the mean "
            "risk of the checkpoint's typical patients seen through each patient's kinds "
            "of data, averaged over the test patients):",
            "",
            "| outcome | reference | " + " | ".join(mc["mean_abs"]) + " |",
            "|---|---|" + "---|" * len(mc["mean_abs"]),
        ]
        for o in OUTCOMES:
            cells = " | ".join(
                f"{100 * mc['mean_abs'][m][o]:.1f} / {100 * mc['mean'][m][o]:+.1f}"
                for m in mc["mean_abs"]
            )
            lines.append(f"| {o} | {100 * mc['reference'][o]:.1f}% | {cells} |")
    lines += [
        "",
        "Plots: `roc_<outcome>.png`, `calibration_<outcome>.png`, `dice.png`"
        + (", `real_anatomy.png`." if "real_anatomy" in metrics else "."),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
