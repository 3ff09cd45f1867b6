"""One-file checkpoints: weights, config, schema, encoder identity, versions, metrics.

The file is a ``torch.save`` dict of tensors and plain containers, read back with
``weights_only=True`` (no pickled code runs on load).  A model card (markdown) is
written beside it, and its text is stored inside too.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.errors import CheckpointError, IncompatibleCheckpointError
from model.numeric_branch import FeatureSchema
from model.types import OUTCOMES

FORMAT = "mprtm-checkpoint"
#: 2: text as a set of segment embeddings (SentencePooling) and per-modality heads.
#: 3: whitening of the text segment embeddings (SentencePooling buffers, cfg.text_whiten)
#:    and note concepts (NoteConcepts buffers, cfg.note_concepts).
#: 4: the linear path may be reduced-rank (SharedRiskLinear, cfg.shortcut_rank).
#: 5: stage-2 ensembles (cfg.ensemble, ``members.<k>.`` weights), the stage-1 patient cap
#:    (cfg.seg_max_patients) and the attribution background (typical training patients).
#: 6: the training series' embedding distribution (image_reference) for the image quality
#:    gate's familiarity signal; older checkpoints load without it (signal skipped).
FORMAT_VERSION = 6
#: Formats this code reads (older ones are upgraded on load).
READABLE_VERSIONS = (2, 3, 4, 5, 6)


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the weights depend on."""
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "numpy", "scikit-learn", "mprtm-cds"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class Checkpoint:
    """Everything a checkpoint file holds.

    Args:
        config: the model config.
        state_dict: network weights (including calibration buffers).
        schema: numeric feature schema with normalisation statistics.
        text_encoder: identity of the text encoder (name, path, sha256, hidden_size).
        thresholds: outcome -> (moderate, high) calibrated-probability thresholds.
        text_encoder_state: weights of a fine-tuned text encoder, else None.
        metrics: validation/test metrics written by training.
        data_fingerprint: sha256 over the training examples.
        synthetic_training_data: True when trained on simulated patients.
        split: patient ids of the ``train`` and ``val`` splits.
        baselines: name -> state_dict of single-modality networks trained alongside.
        history: training curves.
        versions: package versions at training time.
        created: ISO timestamp.
        card_markdown: the model card.
        background: ``numeric``, ``text`` and ``image`` tensors of the typical training
            patients the modality contributions are measured against
            (:mod:`model.attribution`); None in checkpoints before format 5, which then
            give no contributions.
        image_reference: :meth:`model.image_quality.ImageReference.to_dict` of the
            training series' image embeddings, or None (format < 6, or too few series).
    """

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    schema: FeatureSchema
    text_encoder: dict[str, Any]
    thresholds: dict[str, tuple[float, float]]
    text_encoder_state: dict[str, torch.Tensor] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    synthetic_training_data: bool = False
    split: dict[str, list[str]] = field(default_factory=dict)
    baselines: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    card_markdown: str = ""
    background: dict[str, torch.Tensor] | None = None
    image_reference: dict[str, Any] | None = None


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write the checkpoint and its model card (``<path>.md`` beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not ckpt.card_markdown:
        ckpt.card_markdown = model_card(ckpt)
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": ckpt.config.to_dict(),
        "state_dict": ckpt.state_dict,
        "schema": ckpt.schema.to_dict(),
        "text_encoder": dict(ckpt.text_encoder),
        "text_encoder_state": ckpt.text_encoder_state,
        "thresholds": {k: [float(a), float(b)] for k, (a, b) in ckpt.thresholds.items()},
        "metrics": json.loads(json.dumps(ckpt.metrics)),
        "data_fingerprint": ckpt.data_fingerprint,
        "synthetic_training_data": bool(ckpt.synthetic_training_data),
        "split": {k: list(v) for k, v in ckpt.split.items()},
        "baselines": ckpt.baselines,
        "history": {k: [float(x) for x in v] for k, v in ckpt.history.items()},
        "versions": ckpt.versions,
        "created": ckpt.created,
        "card_markdown": ckpt.card_markdown,
        "background": ckpt.background,
        "image_reference": ckpt.image_reference,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    path.with_suffix(".md").write_text(ckpt.card_markdown, encoding="utf-8")
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; raise CheckpointError / IncompatibleCheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise IncompatibleCheckpointError(f"{path} is not an M-PRTM checkpoint")
    version = blob.get("format_version")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        raise IncompatibleCheckpointError(
            f"{path} has checkpoint format {version}; this code reads formats {readable}"
        )
    if version == 2:
        _upgrade_from_v2(blob)
    if version in (2, 3):
        _upgrade_from_v3(blob)
    if version in (2, 3, 4) and isinstance(blob.get("config"), dict):
        blob["config"].setdefault("seg_max_patients", 0)  # stage 1 used every patient
    try:
        cfg = ModelConfig.from_dict(_tuplify(blob["config"]))
        schema = FeatureSchema.from_dict(blob["schema"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IncompatibleCheckpointError(f"{path}: bad config or feature schema: {exc}") from exc
    if tuple(cfg.numeric_features) != schema.names:
        raise IncompatibleCheckpointError(f"{path}: config features differ from the schema")
    thresholds = {k: (float(v[0]), float(v[1])) for k, v in blob["thresholds"].items()}
    missing = [o for o in OUTCOMES if o not in thresholds]
    if missing:
        raise IncompatibleCheckpointError(f"{path}: no tier thresholds for {', '.join(missing)}")
    return Checkpoint(
        config=cfg,
        state_dict=blob["state_dict"],
        schema=schema,
        text_encoder=blob["text_encoder"],
        thresholds=thresholds,
        text_encoder_state=blob.get("text_encoder_state"),
        metrics=blob.get("metrics", {}),
        data_fingerprint=blob.get("data_fingerprint", ""),
        synthetic_training_data=bool(blob.get("synthetic_training_data", False)),
        split=blob.get("split", {}),
        baselines=blob.get("baselines", {}),
        history=blob.get("history", {}),
        versions=blob.get("versions", {}),
        created=blob.get("created", ""),
        card_markdown=blob.get("card_markdown", ""),
        background=blob.get("background"),
        image_reference=blob.get("image_reference"),
    )


def _upgrade_from_v2(blob: dict[str, Any]) -> None:
    """Format 2 had no text whitening and no note concepts: add the identity transform
    (switched off) and turn the concepts off in its config."""
    if isinstance(blob.get("config"), dict):
        blob["config"]["note_concepts"] = 0
    states = [blob.get("state_dict") or {}, *(blob.get("baselines") or {}).values()]
    for state in states:
        if "text_pool.detect.weight" not in state:
            continue
        dim = int(state["text_pool.detect.weight"].shape[1])
        state.setdefault("text_pool.white_mean", torch.zeros(dim))
        state.setdefault("text_pool.white_matrix", torch.eye(dim))
        state.setdefault("text_pool.white_on", torch.zeros((), dtype=torch.bool))


def _upgrade_from_v3(blob: dict[str, Any]) -> None:
    """Formats 2 and 3 had one independent linear path per outcome (rank 0)."""
    if isinstance(blob.get("config"), dict):
        blob["config"].setdefault("shortcut_rank", 0)


def _tuplify(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _stage2_line(members: int) -> str:
    if members == 1:
        return "one fusion network"
    return (
        f"an ensemble of {members} fusion networks trained with different seeds on one "
        "split (mean calibrated logit, re-calibrated on the validation split)"
    )


def model_card(ckpt: Checkpoint) -> str:
    """A markdown model card describing the checkpoint."""
    cfg = ckpt.config
    te = ckpt.text_encoder
    n_tuned = cfg.text_trainable_layers
    tuning = "frozen" if n_tuned == 0 else f"top {n_tuned} layers fine-tuned"
    lines = [
        "# M-PRTM model card",
        "",
        f"- Created: {ckpt.created}",
        f"- Preset: `{cfg.preset}`; image {cfg.image_size} px, up to {cfg.max_slices} slices; "
        f"DAE-Former dims {list(cfg.enc_dims)}, depths {list(cfg.enc_depths)}",
        f"- Text encoder: `{te.get('name')}` (sha256 {str(te.get('sha256'))[:16]}...), {tuning}",
        f"- Numeric features: {len(ckpt.schema.names)}",
        f"- Stage 2: {_stage2_line(cfg.ensemble)}",
        f"- Training data fingerprint: `{ckpt.data_fingerprint[:16]}`; "
        f"synthetic training data: **{'yes' if ckpt.synthetic_training_data else 'no'}**",
        f"- Patients: train {len(ckpt.split.get('train', []))}, "
        f"validation {len(ckpt.split.get('val', []))}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in ckpt.versions.items())}",
        "",
        "## Intended use",
        "",
        "Decision support for heart-failure follow-up: 1-year risks of death, cardiovascular",
        "death, rehospitalization, cardiology rehospitalization and MACCE, with per-patient",
        "modality weights (the fusion's attention) and each modality's Shapley contribution",
        "to every probability. Not a diagnosis; a clinician reviews every alert.",
    ]
    if ckpt.synthetic_training_data:
        lines += [
            "",
            "**Trained on simulated patients only: not for clinical use until retrained and",
            "validated on the site's own data.**",
        ]
    lines += [
        "",
        "## Risk tiers (calibrated probability)",
        "",
        "| outcome | moderate >= | high >= |",
    ]
    lines += ["|---|---|---|"]
    for o in OUTCOMES:
        a, b = ckpt.thresholds.get(o, (float("nan"), float("nan")))
        lines.append(f"| {o} | {a:.3f} | {b:.3f} |")
    val = ckpt.metrics.get("val") if isinstance(ckpt.metrics, dict) else None
    if isinstance(val, dict) and val:
        lines += ["", "## Validation metrics", "", *_metric_tables(val)]
    lines.append("")
    return "\n".join(lines)


def _metric_tables(val: dict[str, Any]) -> list[str]:
    """Markdown tables of the validation metrics: one row per outcome, one column per
    model (fusion first, then the single-modality baselines), for AUROC and ECE; then the
    segmentation Dice.  Other entries (ensemble members, provenance) stay in the file."""
    models = [
        k
        for k, v in val.items()
        if isinstance(v, dict) and any(isinstance(v.get(o), dict) for o in OUTCOMES)
    ]
    out: list[str] = []
    for metric, label in (("auroc", "AUROC"), ("ece", "ECE (calibration error)")):
        out += [f"{label}:", "", "| outcome | " + " | ".join(models) + " |"]
        out.append("|---" * (len(models) + 1) + "|")
        for o in OUTCOMES:
            cells = []
            for m in models:
                v = val[m].get(o, {}).get(metric) if isinstance(val[m].get(o), dict) else None
                cells.append("-" if v is None else f"{float(v):.3f}")
            out.append(f"| {o} | " + " | ".join(cells) + " |")
        out.append("")
    seg = val.get("segmentation")
    if isinstance(seg, dict) and seg:
        dice = ", ".join(f"{k.removeprefix('dice_')} {float(v):.3f}" for k, v in seg.items())
        out.append(f"Segmentation Dice (validation): {dice}.")
    return out
