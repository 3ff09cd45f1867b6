"""What ``mprtm validate`` and ``mprtm recalibrate`` share: the site's labelled patients,
scored by a checkpoint, and their subgroup variables."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cds.config import Settings
from cds.errors import UsageError
from cds.model_data import load_model_examples, load_workers
from model.types import OUTCOMES, LabelledExample


def load_site(
    args: argparse.Namespace, settings: Settings, input_size: int
) -> list[LabelledExample]:
    """The labelled patients of ``--data`` (``--labels``, ``--as-of``)."""
    if args.labels is not None and args.as_of is None:
        raise UsageError("--labels needs --as-of (the index date the labels count from)")
    workers = load_workers(getattr(args, "load_workers", 0), args.threads)
    return load_model_examples(
        args.data, input_size, settings, not args.quiet, workers, args.labels, args.as_of
    )


def label_matrix(examples: Sequence[LabelledExample]) -> np.ndarray:
    """(N, 5) labels, NaN where censored."""
    y = np.full((len(examples), len(OUTCOMES)), np.nan)
    for r, e in enumerate(examples):
        for j, o in enumerate(OUTCOMES):
            if o in e.labels:
                y[r, j] = float(e.labels[o])
    return y


def site_fingerprint(examples: Sequence[LabelledExample]) -> str:
    """sha256 over patient ids, labels and numeric inputs (the site data's identity)."""
    h = hashlib.sha256()
    for e in sorted(examples, key=lambda e: e.input.patient_id):
        h.update(e.input.patient_id.encode())
        h.update(repr(sorted(e.labels.items())).encode())
        h.update(repr(sorted(e.input.numeric.items())).encode())
    return h.hexdigest()


def _band(x: float | None, cuts: Sequence[float], names: Sequence[str]) -> str | None:
    if x is None:
        return None
    return names[int(np.searchsorted(cuts, x, side="right"))]


def subgroups(examples: Sequence[LabelledExample]) -> dict[str, np.ndarray]:
    """Subgroup variable -> level per patient (None: unknown)."""
    out: dict[str, list[Any]] = {k: [] for k in ("sex", "age", "hf_type", "egfr", "lge",
                                                  "notes")}  # fmt: skip
    for e in examples:
        num = e.input.numeric
        sex = num.get("sex_male")
        out["sex"].append(None if sex is None else ("male" if sex >= 0.5 else "female"))
        out["age"].append(_band(num.get("age"), (65, 75, 85), ("<65", "65-74", "75-84", ">=85")))
        out["hf_type"].append(_band(num.get("lvef"), (41, 50), ("HFrEF", "HFmrEF", "HFpEF")))
        out["egfr"].append(_band(num.get("egfr"), (30, 60), ("<30", "30-59", ">=60")))
        out["lge"].append("no LGE" if e.input.image is None else "LGE")
        out["notes"].append("no notes" if not e.input.text else "notes")
    return {k: np.array(v, dtype=object) for k, v in out.items()}


def unseen(examples: Sequence[LabelledExample], ck: Any) -> list[LabelledExample]:
    """The patients the checkpoint neither trained, validated nor was recalibrated on."""
    seen = set(ck.split.get("train", [])) | set(ck.split.get("val", []))
    seen |= set(ck.metrics.get("recalibration", {}).get("fit_ids", []))
    return [e for e in examples if e.input.patient_id not in seen]


def site_scoring(
    args: argparse.Namespace, settings: Settings, *, minimum: int, what: str
) -> tuple[Any, list[LabelledExample]]:
    """The checkpoint's Predictor (with the site's ``[model] image_*`` quality gate, as in
    production) and the site's labelled patients it has not seen.

    Raises:
        UsageError: an unusable checkpoint, or fewer than ``minimum`` patients (``what``
            says which patients).
    """
    import torch

    from cds.image_gate import quality_rules
    from model.errors import ModelError
    from model.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        pred = Predictor.from_checkpoint(
            args.checkpoint, threads=args.threads, quality_rules=quality_rules(settings)
        )
    except ModelError as exc:
        raise UsageError(f"--checkpoint: {exc}") from exc
    examples = unseen(load_site(args, settings, pred.config.input_size), pred.checkpoint)
    if len(examples) < minimum:
        raise UsageError(f"only {len(examples)} {what}: need at least {minimum}")
    return pred, examples
