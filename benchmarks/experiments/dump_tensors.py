"""Dump the stage-2 input tensors of a cohort for fusion experiments (not a benchmark).

Mirrors :func:`model.train.train_mprtm` up to the fusion stage, with the same patient
split, feature schema and frozen text embeddings, but puts the *true* LGE burden in
place of the segmented one so that no segmentation network has to be trained.  The
test split is dumped too, together with the true risk, so that an experiment can be
scored against the oracle.  Results of experiments on these tensors are upper bounds
for the image branch; ``docs/decisions/0001-two-phase-training.md`` uses them so.

    python benchmarks/experiments/dump_tensors.py --data DIR --out FILE.pt \
        [--seed 0] [--text-cache DIR]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from cds.dataset import load_dataset
from cds.model_data import to_model_examples
from model._batch import assemble
from model.config import preset
from model.mprtm import build_model
from model.numeric_branch import FeatureSchema
from model.text_branch import TextEmbeddingCache, TextEncoder
from model.train import label_tensors, split_patients, text_embeddings
from model.types import OUTCOMES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text-cache", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    examples = to_model_examples(load_dataset(args.data, with_images=False))
    split = split_patients([e.input.patient_id for e in examples], args.seed)
    by_id = {e.input.patient_id: e for e in examples}
    split["test"] = sorted(set(by_id) - set(split["train"]) - set(split["val"]))
    cfg = preset("small")
    schema = FeatureSchema.fit([by_id[i].input.numeric for i in split["train"]])
    enc = TextEncoder(cfg.text_encoder, 0, cfg.text_window, cfg.text_max_segments)
    cfg = dataclasses.replace(cfg, numeric_features=schema.names, text_dim=enc.hidden_size)
    width = build_model(cfg).image.embed_dim + 1  # pooled encoder features, then the burden
    cache = TextEmbeddingCache(enc, args.text_cache)
    out: dict[str, object] = {"cfg": dataclasses.asdict(cfg), "schema": schema.to_dict()}
    for name in ("train", "val", "test"):
        part = [by_id[i] for i in split[name]]
        temb, tpres = text_embeddings(part, cache, True)
        lab = label_tensors(part, cfg.causes)  # its burden needs images: set below
        truth = np.array([np.nan if e.fibrosis_burden is None else e.fibrosis_burden for e in part])
        ipres = ~np.isnan(truth)  # the simulator records a burden for each imaged patient
        lab["burden"] = torch.from_numpy(truth.astype(np.float32))
        iemb = np.zeros((len(part), width), dtype=np.float32)
        iemb[:, -1] = np.nan_to_num(truth)
        t = assemble([e.input for e in part], schema, temb, tpres, iemb, ipres)
        t.update(lab)
        t["ids"] = [e.input.patient_id for e in part]
        t["risk"] = torch.tensor(
            [[e.oracle_risk.get(o, np.nan) for o in OUTCOMES] for e in part], dtype=torch.float32
        )
        out[name] = t
    torch.save(out, args.out)


if __name__ == "__main__":
    main()
