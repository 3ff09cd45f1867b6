"""``validation.html``: one self-contained page (tables, PNG plots inlined as data URIs;
nothing is fetched from anywhere)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from model.types import OUTCOMES  # noqa: E402


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, list) and len(x) == 2:
        return f"[{_fmt(x[0], digits)}, {_fmt(x[1], digits)}]"
    return html.escape(str(x))


def _table(rows: Sequence[Mapping[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        mark = ' class="flag"' if r.get("flagged") or r.get("calibration_flagged") else ""
        body.append(f"<tr{mark}>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def plots(report: Mapping[str, Any], y: np.ndarray, p: np.ndarray) -> dict[str, str]:
    """ROC, calibration, decision curve and subgroup forest plot as data URIs."""
    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for j, o in enumerate(OUTCOMES):
        ok = ~np.isnan(y[:, j])
        if o not in report["overall"]:
            continue
        fpr, tpr, _ = roc_curve(y[ok, j], p[ok, j])
        axes[0].plot(fpr, tpr, label=f"{o} {report['overall'][o]['auroc']:.3f}")
        edges = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(p[ok, j], edges[1:-1]), 0, 9)
        xs = [p[ok, j][which == b].mean() for b in range(10) if (which == b).sum() >= 5]
        ys = [y[ok, j][which == b].mean() for b in range(10) if (which == b).sum() >= 5]
        axes[1].plot(xs, ys, "o-", ms=3, label=o)
    for ax, (xl, yl) in zip(axes, (("1 - specificity", "sensitivity"),
                                   ("predicted", "observed")), strict=True):  # fmt: skip
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
    axes[0].set_title("ROC")
    axes[1].set_title("calibration (10 bins, >= 5 patients)")
    out["roc_calibration"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for o, dc in report["decision_curve"].items():
        ax.plot(dc["threshold"], dc["model"], label=o)
    first = next(iter(report["decision_curve"].values()), None)
    if first:
        ax.plot(first["threshold"], first["treat_all"], "k--", lw=0.8, label="flag all (death)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(-0.05, None)
    ax.set_xlabel("threshold probability")
    ax.set_ylabel("net benefit")
    ax.set_title("decision curve")
    ax.legend(fontsize=7)
    out["decision_curve"] = _png(fig)
    rows = [r for r in report["subgroups"] if r["outcome"] == "death" and r["auroc"] is not None]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1.2))
    for k, r in enumerate(rows):
        lo, hi = r["auroc_ci"] or (r["auroc"], r["auroc"])
        ax.plot([lo, hi], [k, k], "k-", lw=1)
        ax.plot([r["auroc"]], [k], "s", color="C3" if r["calibration_flagged"] else "C0")
    if "death" in report["overall"]:
        ax.axvline(report["overall"]["death"]["auroc"], color="k", ls=":", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['variable']}={r['level']}" for r in rows], fontsize=7)
    ax.set_xlabel("AUROC, death (red: calibration-in-the-large beyond the limit)")
    out["forest"] = _png(fig)
    return out


def render(report: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    """The whole page."""
    ov = [{"outcome": o, **m} for o, m in report["overall"].items()]
    ck = report.get("checkpoint", {}).get("validation", {})
    for r in ov:
        r["checkpoint_auroc"] = (ck.get(r["outcome"]) or {}).get("auroc")
        r["checkpoint_ece"] = (ck.get(r["outcome"]) or {}).get("ece")
    mag = [{"outcome": o, **m} for o, m in report.get("maggic", {}).items()]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Local validation</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:"
        "collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px}"
        "tr.flag td{background:#fde2e2}</style></head><body>",
        "<h1>M-PRTM local validation</h1>",
        f"<p>{_fmt(report['n_patients'])} labelled patients as of {_fmt(report['as_of'])}; "
        f"checkpoint {_fmt(report['checkpoint'].get('sha256', '')[:12])} (trained on "
        f"{'synthetic' if report['checkpoint'].get('synthetic') else 'site'} data). "
        "Red rows: flag-rate ratio outside 0.8-1.25 or calibration-in-the-large beyond "
        f"{report['limits']['citl']}.</p>",
        "<h2>Discrimination and calibration</h2>",
        _table(
            ov,
            [
                "outcome",
                "n",
                "prevalence",
                "mean_predicted",
                "auroc",
                "auroc_ci",
                "auprc",
                "calibration_intercept",
                "calibration_slope",
                "ece",
                "brier",
                "checkpoint_auroc",
                "checkpoint_ece",
            ],
        ),  # fmt: skip
        f"<img alt='ROC and calibration' src='{figures['roc_calibration']}'>",
        f"<img alt='decision curve' src='{figures['decision_curve']}'>",
        "<h2>Thresholds</h2>",
        _table(
            report["thresholds"],
            [
                "outcome",
                "kind",
                "cutoff",
                "flag_rate",
                "alerts_per_100",
                "sensitivity",
                "specificity",
                "ppv",
                "npv",
                "nne",
            ],
        ),  # fmt: skip
        "<h2>Subgroups (flag at the high-tier threshold)</h2>",
        f"<img alt='forest plot' src='{figures['forest']}'>",
        _table(
            report["subgroups"],
            [
                "outcome",
                "variable",
                "level",
                "n",
                "prevalence",
                "auroc",
                "auroc_ci",
                "calibration_intercept",
                "ece",
                "flag_rate",
                "flag_rate_ratio",
                "flagged",
                "calibration_flagged",
            ],
        ),  # fmt: skip
        "<h2>Model against MAGGIC (paired bootstrap)</h2>",
        _table(
            mag, ["outcome", "n", "auroc_model", "auroc_maggic", "difference_ci", "ece_maggic"]
        ),  # fmt: skip
        "<h2>Does the model see patients like ours?</h2>",
        _table(
            [{"modality": m, **v} for m, v in report.get("modalities", {}).items()],
            ["modality", "missing_site", "missing_train"],
        ),  # fmt: skip
        _table(
            report["shift"],
            ["feature", "smd", "mean_site", "mean_train", "missing_site", "missing_train"],
        ),  # fmt: skip
        "</body></html>",
    ]
    return "\n".join(parts)
