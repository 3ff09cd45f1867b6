"""Run stage 2 (fusion training) on dumped tensors and score it on the test split.

An experiment harness, not a benchmark: it trains the fusion exactly as
:func:`model.train.train_mprtm` does after segmentation (note concepts fitted on the
training text, phases A/B/C, temperature calibration on validation), then prints test
AUROC per outcome, the oracle's, and validation loss.  ``--set key=value`` overrides
config fields; ``--phase-a-only`` stops after the linear path.

    python benchmarks/experiments/stage2.py --tensors FILE.pt [--seed 0] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from model._fusion_train import _fit, evaluate_loss, predict_logits, train_fusion, wide_parameters
from model.config import ModelConfig
from model.mprtm import build_model
from model.train import _calibrate, seed_everything
from model.types import OUTCOMES


def _value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def auroc_by_outcome(net: torch.nn.Module, test: dict, only: int | None = None) -> dict[str, float]:
    logits = predict_logits(net, test, only)["logits"].numpy()
    y = test["y"].numpy()
    return {
        o: float(roc_auc_score(y[~np.isnan(y[:, j]), j], logits[~np.isnan(y[:, j]), j]))
        for j, o in enumerate(OUTCOMES)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--phase-a-only", action="store_true")
    ap.add_argument("--save-logits", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = torch.load(args.tensors, weights_only=False)
    raw = dict(d["cfg"])
    for kv in args.set:
        k, v = kv.split("=", 1)
        raw[k] = _value(v)
    cfg = ModelConfig.from_dict({k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    t0 = time.perf_counter()
    seed_everything(args.seed)
    net = build_model(cfg)
    tr, va, te = ({k: v for k, v in d[s].items() if k != "ids"} for s in ("train", "val", "test"))
    has = tr["present"][:, 1]
    if net.note_concepts is not None:
        net.note_concepts.fit(tr["text"][has], args.seed)
    if args.phase_a_only:
        net.use_deep = False
        gen = torch.Generator().manual_seed(args.seed)
        wide = wide_parameters(net)
        h = _fit(net, tr, va, cfg, gen, cfg.fusion_epochs, None, False, "A", None, wide,
                 cfg.linear_lr, True, 0.0)  # fmt: skip
        hist = {"wide_val_loss": h["val_loss"]}
    else:
        hist = train_fusion(net, tr, va, cfg, args.seed, cfg.fusion_epochs, None, False)
    _calibrate(net, va, None)
    res = {
        "seconds": round(time.perf_counter() - t0, 1),
        "val_loss": round(evaluate_loss(net, va, None), 4),
        "test": {k: round(v, 4) for k, v in auroc_by_outcome(net, te).items()},
        "wide_best_val": round(min(hist.get("wide_val_loss", [np.nan])), 4),
    }
    risk = te["risk"].numpy()
    y = te["y"].numpy()
    res["oracle"] = {
        o: round(float(roc_auc_score(y[:, j], risk[:, j])), 4) for j, o in enumerate(OUTCOMES)
    }
    if args.save_logits:
        np.save(args.save_logits, predict_logits(net, te, None)["logits"].numpy())
    print(json.dumps({"seed": args.seed, "set": args.set, **res}))


if __name__ == "__main__":
    main()
