"""Logistic recalibration of a checkpoint on a site's labelled patients.

For each outcome, ``sigmoid(a * z + c)`` is fitted to the site's labels on the current
calibrated logit ``z`` (:func:`model.calibration.fit_temperature`); since the network
computes ``z = logit * scale + bias``, the new buffers are ``a * scale`` and
``a * bias + c``.  The tier thresholds are set again from the recalibrated probabilities
of the fitting patients.  The new checkpoint records its parent and the site data.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model.calibration import fit_temperature, tier_thresholds
from model.checkpoint import Checkpoint, model_card
from model.metrics import ece
from model.types import OUTCOMES

MIN_PATIENTS = 20


def recalibrate(
    ck: Checkpoint,
    parent_sha256: str,
    logits: np.ndarray,
    y: np.ndarray,
    fit: np.ndarray,
    site_fingerprint: str,
    fit_ids: Sequence[str],
) -> tuple[Checkpoint, dict[str, Any]]:
    """A recalibrated copy of ``ck`` and the before/after figures.

    Args:
        ck: the parent checkpoint.
        parent_sha256: the parent file's sha256.
        logits: (N, 5) raw logits of the site's patients.
        y: (N, 5) labels, NaN censored.
        fit: (N,) bool: the patients the recalibration is fitted on; the others are the
            held-out half its effect is measured on.
        site_fingerprint: sha256 over the site's patients and labels.
        fit_ids: patient ids of the fitting patients (kept so a later validation can
            leave them out).
    """
    state = ck.state_dict
    scale = state["calib_scale"].clone()
    bias = state["calib_bias"].clone()
    z = logits * scale.numpy()[None, :] + bias.numpy()[None, :]
    new_scale, new_bias = scale.clone(), bias.clone()
    figures: dict[str, Any] = {}
    thresholds = dict(ck.thresholds)
    for j, o in enumerate(OUTCOMES):
        ok = ~np.isnan(y[:, j]) & ~np.isnan(z[:, j])
        f, h = ok & fit, ok & ~fit
        if f.sum() < MIN_PATIENTS or not 0 < y[f, j].sum() < f.sum():
            figures[o] = {"skipped": f"fewer than {MIN_PATIENTS} labelled patients of both classes"}
            continue
        a, c = fit_temperature(z[f, j], y[f, j])
        new_scale[j] = float(a) * scale[j]
        new_bias[j] = float(a) * bias[j] + float(c)
        before = 1 / (1 + np.exp(-z[:, j]))
        after = 1 / (1 + np.exp(-(a * z[:, j] + c)))
        thresholds[o] = tier_thresholds(after[f])
        figures[o] = {
            "slope": float(a),
            "intercept": float(c),
            "n_fit": int(f.sum()),
            "n_held_out": int(h.sum()),
            "ece_before": ece(y[h, j], before[h]) if h.sum() else None,
            "ece_after": ece(y[h, j], after[h]) if h.sum() else None,
        }
    new = copy.copy(ck)
    new.state_dict = {**state, "calib_scale": new_scale, "calib_bias": new_bias}
    new.thresholds = thresholds
    new.metrics = copy.deepcopy(ck.metrics)
    new.metrics["provenance"] = {
        "method": "logistic recalibration",
        "parent_sha256": parent_sha256,
        "parent_created": ck.created,
        "parent_data_fingerprint": ck.data_fingerprint,
        "site_data_fingerprint": site_fingerprint,
    }
    new.metrics["recalibration"] = {"outcomes": figures, "fit_ids": list(fit_ids)}
    new.created = datetime.now(UTC).isoformat(timespec="seconds")
    new.card_markdown = model_card(new) + provenance_section(new.metrics["provenance"], figures)
    return new, figures


def provenance_section(prov: dict[str, Any], figures: dict[str, Any]) -> str:
    """Markdown appended to the model card of an adapted checkpoint."""
    lines = ["", "## Provenance", ""]
    lines += [f"- {k.replace('_', ' ')}: `{v}`" for k, v in prov.items()]
    if figures:
        lines += ["", "| outcome | slope | intercept | ECE before | ECE after (held out) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for o, f in figures.items():
            if "slope" in f and f["ece_before"] is not None:
                lines.append(
                    f"| {o} | {f['slope']:.3f} | {f['intercept']:.3f} | "
                    f"{f['ece_before']:.4f} | {f['ece_after']:.4f} |"
                )
    return "\n".join(lines) + "\n"
