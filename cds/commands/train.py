"""``mprtm train``: train M-PRTM on a labelled cohort folder and write a checkpoint.

The folder has the layout of ``mprtm synth`` / ``mprtm import-csv`` (see
:mod:`cds.dataset`).  Stage 1 trains the DAE-Former segmentation on slices with masks,
stage 2 the fusion; a quarter of the patients is held out for ``mprtm evaluate``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.errors import UsageError
from cds.model_data import (
    add_load_workers_argument,
    add_site_label_arguments,
    cause_classes,
    is_synthetic,
    load_model_examples,
    load_workers,
)

log = logging.getLogger("mprtm.cli")


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train the M-PRTM model on a labelled cohort folder")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="cohort folder")
    p.add_argument("--out", required=True, type=Path, metavar="CKPT", help="checkpoint file")
    p.add_argument("--preset", choices=["small", "full"], default="small")
    p.add_argument(
        "--epochs", type=int, default=None, metavar="N", help="stage-1 (segmentation) epochs"
    )
    p.add_argument(
        "--fusion-epochs",
        type=int,
        default=None,
        metavar="N",
        help="stage-2 epochs at most (early stopping on validation loss)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (0: torch)")
    p.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="local BERT folder (default: [model] text_encoder, else the bundled MiniLM)",
    )
    p.add_argument(
        "--text-cache", type=Path, default=None, metavar="DIR", help="cache of text embeddings"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set seg_epochs=10 --set enc_dims=32,64,128",
    )
    add_load_workers_argument(p)
    add_site_label_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_handler)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed ModelConfig overrides (UsageError naming the key)."""
    import dataclasses

    from model.config import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    defaults = ModelConfig()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields or key in ("extra", "numeric_features", "preset"):
            raise UsageError(f"--set {item!r}: expected KEY=VALUE with KEY a model config field")
        current = getattr(defaults, key)
        try:
            if isinstance(current, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1")
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            elif isinstance(current, tuple):
                parts = [p.strip() for p in raw.split(",") if p.strip()]
                value = (
                    tuple(int(p) for p in parts)
                    if key in ("enc_dims", "enc_depths")
                    else tuple(parts)
                )
            else:
                value = raw
        except ValueError:
            raise UsageError(
                f"--set {key}: cannot read {raw!r} as {type(current).__name__}"
            ) from None
        out[key] = value
    return out


def _segment_store(settings: Settings) -> Any:
    """The application database's segment-embedding cache (``[model] segment_cache``), so
    training and inference encode a segment once; None when turned off."""
    if not settings.model.segment_cache:
        return None
    from cds.text_cache import DbSegmentStore

    return DbSegmentStore.open(settings.database.url)


def _handler(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    from model.config import preset
    from model.errors import ModelError
    from model.train import train_mprtm

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    if args.threads < 0:
        raise UsageError("--threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    if args.epochs is not None:
        if args.epochs < 0:
            raise UsageError("--epochs must be >= 0")
        overrides["seg_epochs"] = args.epochs
    if args.fusion_epochs is not None:
        if args.fusion_epochs <= 0:
            raise UsageError("--fusion-epochs must be > 0")
        overrides["fusion_epochs"] = args.fusion_epochs
    encoder = args.text_encoder if args.text_encoder is not None else settings.model.text_encoder
    overrides["text_encoder"] = encoder or ""
    try:
        cfg = preset(args.preset, **overrides)
    except ValueError as exc:
        raise UsageError(f"bad model config: {exc}") from exc
    workers = load_workers(args.load_workers, args.threads)
    if args.labels is not None and args.as_of is None:
        raise UsageError("--labels needs --as-of (the index date the labels count from)")
    examples = load_model_examples(
        args.data, cfg.input_size, settings, not args.quiet, workers, args.labels, args.as_of
    )
    cfg.causes = cause_classes(examples)
    try:
        res = train_mprtm(
            examples,
            cfg,
            seed=args.seed,
            device=args.device,
            out=args.out,
            progress=not args.quiet,
            text_cache_dir=args.text_cache,
            synthetic=is_synthetic(args.data),
            segment_store=_segment_store(settings),
        )
    except ValueError as exc:
        raise UsageError(f"cannot train: {exc}") from exc
    except ModelError as exc:
        raise UsageError(f"cannot train: {exc}") from exc
    val = res.checkpoint.metrics.get("val", {})
    death = val.get("fusion", {}).get("death", {})
    seg = val.get("segmentation", {})
    print(
        f"wrote {res.path} in {res.seconds / 60:.1f} min "
        f"({len(res.checkpoint.split['train'])} train / {len(res.checkpoint.split['val'])} "
        f"validation patients); validation AUROC death {death.get('auroc', float('nan')):.3f}, "
        f"ECE {death.get('ece', float('nan')):.3f}; enhancement Dice "
        f"{seg.get('dice_enhancement', float('nan')):.3f}"
    )
    return 0
