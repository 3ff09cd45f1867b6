"""Evaluation of a checkpoint on held-out patients against baselines and the oracle.

The test split is every patient of the data that the checkpoint did not train or
validate on.  Models compared (each outcome): ``fusion``; the single-modality networks
trained alongside it (``numeric_only``, ``text_only``, ``image_only``; a patient
lacking that modality gets the model's mean test prediction); ``logistic_numeric``
(scikit-learn logistic regression on the same standardised numeric features and
missingness indicators, fit on the training split); ``maggic`` (the published MAGGIC
1-year mortality, used as the risk score of every outcome); ``oracle`` (the simulator's
true risk, when the data carry it).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from model._batch import assemble, has_text
from model._fusion_train import predict_logits
from model._report import write_report
from model.attribution import modality_contributions
from model.errors import ModelError
from model.image_branch import ENHANCEMENT, MYOCARDIUM, select_slices
from model.maggic import maggic_one_year_mortality
from model.metrics import binary_metrics, bootstrap_auroc
from model.mprtm import MPRTMEnsemble, build_model
from model.predictor import Predictor
from model.real_anatomy import LabelledSlices, evaluate_real_anatomy
from model.train import label_tensors
from model.types import MODALITIES, OUTCOMES, ImageFeatures, LabelledExample

log = logging.getLogger("mprtm.evaluate")

MODELS = (
    "fusion",
    "numeric_only",
    "text_only",
    "image_only",
    "logistic_numeric",
    "maggic",
    "oracle",
)


def _dice(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    out = []
    for fn in (lambda t: t >= MYOCARDIUM, lambda t: t == ENHANCEMENT):
        p, t = fn(pred), fn(true)
        total = int(p.sum() + t.sum())
        out.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return out[0], out[1]


def _features(
    pred: Predictor, examples: Sequence[LabelledExample], progress: bool
) -> tuple[dict[str, torch.Tensor], list[ImageFeatures | None]]:
    feats: list[ImageFeatures | None] = []
    for ex in tqdm(examples, desc="test images", unit="patient", disable=not progress):
        feats.append(None if ex.input.image is None else pred.encode_image(ex.input.image))
    img = np.zeros((len(examples), pred.network.image.embed_dim + 1), dtype=np.float32)
    for r, f in enumerate(feats):
        if f is not None:
            img[r, :-1], img[r, -1] = f.embedding, f.fibrosis_burden
    tp = np.array([has_text(e.input) for e in examples], dtype=bool)
    cfg = pred.config
    txt = np.zeros((len(examples), cfg.text_max_segments, cfg.text_dim), dtype=np.float32)
    idx = np.flatnonzero(tp)
    if len(idx):
        texts = [examples[int(i)].input.text or "" for i in idx]
        txt[idx] = pred.encode_texts(texts, progress=progress)
    ip = np.array([f is not None for f in feats], dtype=bool)
    t = assemble([e.input for e in examples], pred.schema, txt, tp, img, ip)
    t.update(label_tensors(examples, pred.config.causes))
    return t, feats


def _probs(net: Any, data: dict[str, torch.Tensor], only: int | None) -> np.ndarray:
    logits = predict_logits(net, data, only)["logits"]
    with torch.inference_mode():
        p = net.calibrated_probabilities(logits).numpy().astype(np.float64)
    for j in range(p.shape[1]):  # patients without the modality: the mean prediction
        col = p[:, j]
        col[np.isnan(col)] = np.nanmean(col) if np.isfinite(col).any() else 0.5
    return p


def evaluate_checkpoint(
    checkpoint: str | Path,
    examples: Sequence[LabelledExample],
    out_dir: str | Path,
    n_boot: int = 1000,
    progress: bool = True,
    threads: int = 0,
    real_anatomy: LabelledSlices | None = None,
) -> dict[str, Any]:
    """Evaluate on the held-out patients; write metrics.json, extras.json, report.md,
    attribution.csv (per-patient modality weights and contributions) and PNGs.

    Args:
        checkpoint: the checkpoint file.
        examples: every patient of the data folder (train/val ones are set aside).
        out_dir: report folder (created).
        n_boot: bootstrap resamples for the AUROC confidence intervals.
        progress: progress bars.
        threads: CPU threads (0 = torch default).
        real_anatomy: real slices with expert myocardium contours (the Sunnybrook cine
            subset): their myocardium Dice goes to ``metrics["real_anatomy"]``, a
            section of report.md and real_anatomy.png (``model/real_anatomy.py``).

    Returns:
        the metrics.json content.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred = Predictor.from_checkpoint(checkpoint, threads=threads)
    ck = pred.checkpoint
    seen = set(ck.split.get("train", [])) | set(ck.split.get("val", []))
    test = [e for e in examples if e.input.patient_id not in seen]
    train = [e for e in examples if e.input.patient_id in set(ck.split.get("train", []))]
    if len(test) < 10:
        raise ModelError(f"only {len(test)} held-out patients in the data; need at least 10")
    data, feats = _features(pred, test, progress)
    y = data["y"].numpy().astype(np.float64)
    scores: dict[str, np.ndarray] = {"fusion": _probs(pred.network, data, None)}
    image_state = {k: v for k, v in ck.state_dict.items() if k.startswith("image.")}
    for j, m in enumerate(MODALITIES):
        state = ck.baselines.get(f"{m}_only")
        if state is None:
            continue
        net = build_model(ck.config)
        net.load_state_dict({**state, **image_state}, strict=True)
        scores[f"{m}_only"] = _probs(net.eval(), data, j)
    x_tr = pred.schema.transform([e.input.numeric for e in train])
    x_te = data["numeric"].numpy()
    lr = np.zeros_like(y)
    for j, o in enumerate(OUTCOMES):
        y_tr = np.array([e.labels.get(o, np.nan) for e in train], dtype=np.float64)
        ok = ~np.isnan(y_tr)
        clf = LogisticRegression(C=0.5, max_iter=3000).fit(x_tr[ok], y_tr[ok])
        lr[:, j] = clf.predict_proba(x_te)[:, 1]
    scores["logistic_numeric"] = lr
    mag = np.array([maggic_one_year_mortality(e.input.numeric) for e in test])
    scores["maggic"] = np.repeat(mag[:, None], len(OUTCOMES), axis=1)
    if all(all(o in e.oracle_risk for o in OUTCOMES) for e in test):
        scores["oracle"] = np.array([[e.oracle_risk[o] for o in OUTCOMES] for e in test])
    metrics: dict[str, Any] = {}
    for name, s in scores.items():
        metrics[name] = {}
        for j, o in enumerate(OUTCOMES):
            ok = ~np.isnan(y[:, j])
            if ok.sum() and 0 < y[ok, j].sum() < ok.sum():
                metrics[name][o] = binary_metrics(y[ok, j], s[ok, j], n_boot=n_boot)
    seg = _segmentation(test, feats)
    metrics["segmentation"] = {
        k: seg[k] for k in ("dice_myocardium", "dice_enhancement", "burden_mae")
    }
    metrics["n_test"] = len(test)
    if real_anatomy is not None:
        metrics["real_anatomy"] = evaluate_real_anatomy(
            pred, real_anatomy, n_boot, figure=out / "real_anatomy.png"
        )
    extras = _extras(pred, data, y, scores, n_boot, test)
    per_patient = None
    built = 0
    if pred.background is None:  # a checkpoint before format 5: draw typical patients now
        built = pred.build_background([e.input for e in train])
    if pred.attribution:
        extras["modality_contributions"], per_patient = _contribution_summary(pred, data, progress)
        extras["modality_contributions"]["background"] = (
            f"{built} training patients drawn at evaluation (the checkpoint stores none)"
            if built
            else "stored in the checkpoint"
        )
    if isinstance(pred.network, MPRTMEnsemble):
        extras["ensemble_members"] = _member_aurocs(pred.network, data, y)
    weights = predict_logits(pred.network, data, None)["weights"].numpy()
    _write_attribution_csv(out / "attribution.csv", test, weights, per_patient)
    extras["segmentation_per_patient"] = {
        k: seg[k] for k in ("per_patient_myocardium", "per_patient_enhancement")
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    (out / "extras.json").write_text(json.dumps(extras, indent=2), encoding="utf-8")
    write_report(out, metrics, extras, y, scores, ck)
    return metrics


def _segmentation(
    test: Sequence[LabelledExample], feats: Sequence[ImageFeatures | None]
) -> dict[str, Any]:
    """Dice (pooled over all test pixels) and burden MAE on patients with masks."""
    myo_i = myo_t = enh_i = enh_t = 0
    per_myo, per_enh, err = [], [], []
    for ex, f in zip(test, feats, strict=True):
        if f is None or f.segmentation is None or ex.masks is None:
            continue
        p, t = f.segmentation, np.asarray(ex.masks)
        if p.shape[0] != t.shape[0]:  # a long series: the slices the model used
            t = t[select_slices(t.shape[0], p.shape[0])]
        if p.shape != t.shape:
            continue
        pm, tm, pe, te = p >= MYOCARDIUM, t >= MYOCARDIUM, p == ENHANCEMENT, t == ENHANCEMENT
        myo_i += int((pm & tm).sum())
        myo_t += int(pm.sum() + tm.sum())
        enh_i += int((pe & te).sum())
        enh_t += int(pe.sum() + te.sum())
        d = _dice(p, t)
        per_myo.append(d[0])
        per_enh.append(d[1])
        true_burden = (
            ex.fibrosis_burden
            if ex.fibrosis_burden is not None
            else float(te.sum() / max(tm.sum(), 1))
        )
        err.append(abs(f.fibrosis_burden - true_burden))
    return {
        "dice_myocardium": 2 * myo_i / myo_t if myo_t else None,
        "dice_enhancement": 2 * enh_i / enh_t if enh_t else None,
        "burden_mae": float(np.mean(err)) if err else None,
        "per_patient_myocardium": per_myo,
        "per_patient_enhancement": per_enh,
    }


def _member_aurocs(
    net: MPRTMEnsemble, data: dict[str, torch.Tensor], y: np.ndarray
) -> list[dict[str, float]]:
    """Test AUROC of each ensemble member alone (its own calibration), to set the
    ensemble's gain against in the same run."""
    out = []
    for member in net.members:
        p = _probs(member.eval(), data, None)
        res = {}
        for j, o in enumerate(OUTCOMES):
            ok = ~np.isnan(y[:, j])
            if ok.sum() and 0 < y[ok, j].sum() < ok.sum():
                res[o] = float(binary_metrics(y[ok, j], p[ok, j], n_boot=0)["auroc"])  # type: ignore[arg-type]
        out.append(res)
    return out


def _contribution_summary(
    pred: Predictor, data: dict[str, torch.Tensor], progress: bool = True, batch: int = 32
) -> tuple[dict[str, Any], np.ndarray]:
    """Mean reference probability and the mean and mean absolute Shapley contribution
    of each modality (probability units) over the test patients (model/attribution.py);
    also the per-patient reference and contributions (N, M + 1, O), reference last."""
    net = pred.network.eval()
    assert pred.background is not None
    chunks = []
    starts = range(0, len(data["present"]), batch)
    for s in tqdm(starts, desc="contributions", unit="batch", disable=not progress):
        b = {k: v[s : s + batch] for k, v in data.items()}
        ref, c = modality_contributions(
            net, b["numeric"], b["text"], b["image"], b["present"], pred.background
        )
        chunks.append(torch.cat([c, ref[:, None]], dim=1))
    both = torch.cat(chunks).numpy()  # (N, M + 1, O)
    contrib, reference = both[:, :-1], both[:, -1]
    summary = {
        "reference": {o: float(reference[:, k].mean()) for k, o in enumerate(OUTCOMES)},
        "mean": {
            m: {o: float(contrib[:, j, k].mean()) for k, o in enumerate(OUTCOMES)}
            for j, m in enumerate(MODALITIES)
        },
        "mean_abs": {
            m: {o: float(np.abs(contrib[:, j, k]).mean()) for k, o in enumerate(OUTCOMES)}
            for j, m in enumerate(MODALITIES)
        },
    }
    return summary, both


def _write_attribution_csv(
    path: Path, test: Sequence[LabelledExample], weights: np.ndarray, contrib: np.ndarray | None
) -> None:
    """Per test patient: the fusion's attention weights and, when the checkpoint gives
    them, each modality's contribution to every outcome probability and the patient's
    reference (for audits, and to compare two trainings)."""
    cols = [f"weight_{m}" for m in MODALITIES]
    parts = [*MODALITIES, "reference"]
    if contrib is not None:
        cols += [f"{o}_{m}" for o in OUTCOMES for m in parts]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", *cols])
        for r, e in enumerate(test):
            vals = list(weights[r])
            if contrib is not None:
                vals += [contrib[r, j, k] for k in range(len(OUTCOMES)) for j in range(len(parts))]
            w.writerow([e.input.patient_id, *(f"{v:.6f}" for v in vals)])


def _extras(
    pred: Predictor,
    data: dict[str, torch.Tensor],
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    n_boot: int,
    test: Sequence[LabelledExample],
) -> dict[str, Any]:
    """Paired AUROC differences vs fusion, modality-drop degradation, mean weights."""
    extras: dict[str, Any] = {"paired_auroc_difference_vs_fusion": {}, "modality_drop": {}}
    for name, s in scores.items():
        if name == "fusion":
            continue
        extras["paired_auroc_difference_vs_fusion"][name] = {}
        for j, o in enumerate(OUTCOMES):
            ok = ~np.isnan(y[:, j])
            if not (ok.sum() and 0 < y[ok, j].sum() < ok.sum()):
                continue
            _, _, lo, hi = bootstrap_auroc(
                y[ok, j], scores["fusion"][ok, j], max(n_boot, 200), 1, ref=s[ok, j]
            )
            extras["paired_auroc_difference_vs_fusion"][name][o] = [lo, hi]
    present = data["present"]
    for j, m in enumerate(MODALITIES):
        dropped = present.clone()
        dropped[:, j] = False
        keep = dropped.any(dim=1)
        dropped = torch.where(keep[:, None], dropped, present)
        d = {**data, "present": dropped}
        p = _probs(pred.network, d, None)
        res = {}
        for k, o in enumerate(OUTCOMES):
            ok = ~np.isnan(y[:, k])
            if ok.sum() and 0 < y[ok, k].sum() < ok.sum():
                res[o] = binary_metrics(y[ok, k], p[ok, k], n_boot=0)
        extras["modality_drop"][f"without_{m}"] = {
            "patients_affected": int((present[:, j] & keep).sum()),
            "metrics": res,
        }
    w = predict_logits(pred.network, data, None)["weights"].numpy()
    extras["mean_modality_weights"] = {m: float(w[:, j].mean()) for j, m in enumerate(MODALITIES)}
    extras["modality_coverage"] = {
        m: float(present[:, j].float().mean()) for j, m in enumerate(MODALITIES)
    }
    extras["n_test"] = len(test)
    return extras


def score_examples(
    pred: Predictor, examples: Sequence[LabelledExample], progress: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
    """Calibrated probabilities (N, 5), raw logits (N, 5) and the assembled tensors of
    ``examples`` (``mprtm validate`` and ``mprtm recalibrate``)."""
    data, _ = _features(pred, examples, progress)
    logits = predict_logits(pred.network, data, None)["logits"]
    with torch.inference_mode():
        p = pred.network.calibrated_probabilities(logits).numpy().astype(np.float64)
    return p, logits.numpy().astype(np.float64), data
