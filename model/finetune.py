"""Site fine-tuning of the image network on expert contours.

A hospital's LGE series with expert masks (myocardium, enhancement) continue stage 1
(:func:`model._seg_train.train_segmentation`, the same training step, loss and best-epoch
rule) from an existing checkpoint.  Everything else in the network is kept.  What
depends on the image network's output is handled as follows:

* the **fibrosis burden** is measured on the new segmentation (that is the point);
* the **image reference** of the quality gate (the familiarity signal,
  :class:`model.image_quality.ImageReference`) is fitted again on the new network's
  embeddings of all the site's series, its scale cross-fitted (:func:`_reference`): the
  old reference describes embeddings the new network no longer produces;
* the **fusion and heads** (stage 2), the single-modality baselines and the attribution
  background were trained on the previous network's image embeddings and are *not*
  re-fitted (that needs outcome labels): the model card says so, and the image embedding
  the fusion now receives is shifted by as much as the encoder moved.  Re-train stage 2
  on the site's labelled cohort before relying on the image modality's share of the risk.

The new checkpoint is a new model version (a new file, so a new sha256) whose
``metrics["site_fine_tuning"]`` and model card carry the provenance: the initial
checkpoint's sha256, the mask set's fingerprint, the counts, the date and the Dice of the
held-out series before and after.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model._seg_train import (
    collect_slices,
    dice_scores,
    embed_images,
    predict_labels,
    train_segmentation,
)
from model.checkpoint import Checkpoint, model_card, package_versions, save_checkpoint
from model.errors import TrainingError
from model.image_branch import ImageBranch
from model.image_quality import ImageReference
from model.predictor import load_network
from model.types import LabelledExample

log = logging.getLogger("mprtm.train")

#: Share of the site's series held out to pick the best epoch and report Dice.
HELD_OUT = 0.2
#: Fewest series for a held-out part (below it the last epoch's weights are kept).
MIN_SERIES_FOR_HELD_OUT = 5
#: Folds of the cross-fitted scale of the image reference.
REFERENCE_FOLDS = 5


@dataclass
class FineTuneResult:
    """What :func:`fine_tune_segmentation` produced.

    Args:
        checkpoint: the new checkpoint.
        path: where it was written (None when not written).
        report: the provenance and Dice (also ``checkpoint.metrics["site_fine_tuning"]``).
    """

    checkpoint: Checkpoint
    path: Path | None
    report: dict[str, Any]


def split_series(ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Training and held-out series ids (:data:`HELD_OUT` of them, none below
    :data:`MIN_SERIES_FOR_HELD_OUT` series), drawn with ``seed``."""
    unique = sorted(set(ids))
    if len(unique) < MIN_SERIES_FOR_HELD_OUT:
        return unique, []
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = max(1, int(round(HELD_OUT * len(unique))))
    picked = [unique[i] for i in order]
    return picked[n_val:], picked[:n_val]


def _dice(
    branch: ImageBranch, part: Sequence[LabelledExample], cfg: Any, dev: torch.device
) -> dict[str, float]:
    x, y = collect_slices(part, cfg, 0, np.random.default_rng(0))
    if len(x) == 0:
        return {}
    return dice_scores(predict_labels(branch, x.to(dev)).cpu(), y)


def _reference(
    branch: ImageBranch, series: Sequence[LabelledExample], cfg: Any, dev: torch.device, seed: int
) -> ImageReference | None:
    """The familiarity reference of the new network: fitted on every site series, its scale
    (the 99.5th percentile of held-out distances) taken from :data:`REFERENCE_FOLDS`-fold
    cross-fitting, so each distance is of a series the fit did not see.  A few dozen series
    are too few to hold enough out in one split; in-sample distances would set the scale
    far too small.  None with fewer than 10 series."""
    emb, ok = embed_images(branch, series, cfg, dev, progress=False)
    emb = emb[ok, :-1]
    if len(emb) < 10:
        return None
    folds = np.array_split(np.random.default_rng(seed).permutation(len(emb)), REFERENCE_FOLDS)
    held_out: list[float] = []
    for fold in folds:
        rest = np.setdiff1d(np.arange(len(emb)), fold)
        ref = ImageReference.fit(emb[rest], emb[rest])
        if ref is not None:
            held_out += [ref.distance(e) for e in emb[fold]]
    full = ImageReference.fit(emb, emb)
    if full is None or not held_out:
        return None
    return dataclasses.replace(full, scale=max(float(np.quantile(held_out, 0.995)), 1e-6))


def fine_tune_segmentation(
    init: Checkpoint,
    examples: Sequence[LabelledExample],
    *,
    init_sha256: str,
    masks_fingerprint: str,
    counts: dict[str, int],
    epochs: int,
    lr: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    out: str | Path | None = None,
    progress: bool = True,
) -> FineTuneResult:
    """Continue stage 1 from ``init`` on a site's series with masks; write a new checkpoint.

    Args:
        init: the checkpoint to start from (left unchanged).
        examples: one per series: ``input.image`` (S, H, W) at ``init.config.input_size``
            and ``masks`` (S, H, W) labels 0/1/2; ``input.patient_id`` names the series.
        init_sha256: sha256 of the initial checkpoint file (provenance).
        masks_fingerprint: fingerprint of the mask set (provenance).
        counts: what was read (series, slices, files...), recorded as given.
        epochs: fine-tuning epochs (> 0).
        lr: peak learning rate (None: the checkpoint's ``seg_lr``).
        seed: seeds the split, shuffling and augmentation.
        device: ``cpu`` or ``cuda``.
        out: the new checkpoint file (model card beside it); None: not written.
        progress: progress bar.

    Raises:
        TrainingError: no series with masks, or bad epochs / learning rate.
    """
    t0 = time.perf_counter()
    if epochs <= 0:
        raise TrainingError(f"epochs must be positive, got {epochs}")
    if lr is not None and not lr > 0:
        raise TrainingError(f"learning rate must be positive, got {lr}")
    usable = [e for e in examples if e.input.image is not None and e.masks is not None]
    if not usable:
        raise TrainingError("no series with masks to fine-tune on")
    torch.manual_seed(seed)
    dev = torch.device(device)
    cfg = dataclasses.replace(
        init.config,
        seg_lr=float(lr if lr is not None else init.config.seg_lr),
        seg_max_patients=0,  # every site series
        seg_max_slices_train=0,  # every annotated slice
    )
    net = load_network(init).to(dev)
    by_id = {e.input.patient_id: e for e in usable}
    tr_ids, va_ids = split_series(list(by_id), seed)
    train = [by_id[i] for i in tr_ids]
    val = [by_id[i] for i in va_ids]
    before = _dice(net.image, val, cfg, dev)
    hist = train_segmentation(
        net.image, train, val, cfg, np.random.default_rng(seed), dev, epochs, progress
    )
    after = _dice(net.image, val, cfg, dev)
    reference = _reference(net.image, [*train, *val], cfg, dev, seed)
    if reference is None:
        log.warning("fewer than 10 series: the new checkpoint has no image reference")
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "init_checkpoint_sha256": init_sha256,
        "masks_fingerprint": masks_fingerprint,
        "counts": dict(counts),
        "series_train": len(train),
        "series_held_out": len(val),
        "epochs": epochs,
        "lr": cfg.seg_lr,
        "seed": seed,
        "held_out_dice_before": before,
        "held_out_dice_after": after,
        "image_reference_refit": reference is not None,
        "fusion_image_embeddings": "previous network (stage 2 not re-fitted)",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    metrics = {**init.metrics, "site_fine_tuning": report}
    ckpt = dataclasses.replace(
        init,
        state_dict={k: v.detach().cpu() for k, v in net.state_dict().items()},
        metrics=metrics,
        history={**init.history, **{f"finetune_{k}": v for k, v in hist.items()}},
        versions=package_versions(),
        created=report["date"],
        image_reference=None if reference is None else reference.to_dict(),
        card_markdown="",
    )
    ckpt.card_markdown = model_card(ckpt) + fine_tuning_card(report)
    path = save_checkpoint(ckpt, out) if out is not None else None
    return FineTuneResult(ckpt, path, report)


def _fmt_dice(d: dict[str, float]) -> str:
    if not d:
        return "n/a (no held-out series)"
    return (
        f"myocardium {d.get('dice_myocardium', float('nan')):.3f}, "
        f"enhancement {d.get('dice_enhancement', float('nan')):.3f}"
    )


def fine_tuning_card(report: dict[str, Any]) -> str:
    """The model card section describing a site fine-tuning."""
    counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
    return "\n".join(
        [
            "## Site fine-tuning of the image network",
            "",
            f"- Date: {report['date']}",
            f"- Started from checkpoint sha256 `{report['init_checkpoint_sha256']}`",
            f"- Expert masks: fingerprint `{report['masks_fingerprint']}`; {counts}",
            f"- Series: {report['series_train']} for training, "
            f"{report['series_held_out']} held out; {report['epochs']} epochs, "
            f"peak learning rate {report['lr']:g}, seed {report['seed']}",
            f"- Held-out Dice before: {_fmt_dice(report['held_out_dice_before'])}",
            f"- Held-out Dice after: {_fmt_dice(report['held_out_dice_after'])}",
            "- The image quality gate's familiarity reference was "
            + (
                "re-fitted on the new network's embeddings of these series (scale "
                "cross-fitted over 5 folds)."
                if report["image_reference_refit"]
                else "dropped (fewer than 10 series): that signal is skipped."
            ),
            "",
            "**The fusion, the heads, the single-modality baselines and the attribution "
            "background were trained on the previous image network's embeddings and were "
            "not re-fitted.** The fibrosis burden comes from the new segmentation; the "
            "image embedding the fusion receives has moved with the encoder. Re-train "
            "stage 2 on the site's labelled cohort before relying on the image modality's "
            "share of the risk.",
            "",
        ]
    )
