"""Write one member of a stage-2 ensemble checkpoint as a single-network checkpoint.

Training is deterministic under a seed on CPU, and member 1 of an ensemble is trained
first, exactly as ``cfg.ensemble = 1`` trains its only network (same stage 1, same
seed, same split, same calibration).  So member 1 extracted from an ensemble checkpoint
is the checkpoint the same command with ``--set ensemble=1`` would have written, except
the tier thresholds and validation metrics, which came from the ensemble.  This lets one
``mprtm train`` run measure the ensemble and the single network on the same split:

    python benchmarks/experiments/extract_member.py ENSEMBLE.pt SINGLE.pt [--member 1]
    mprtm evaluate --data DIR --checkpoint SINGLE.pt --out REPORT
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from model.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ensemble", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--member", type=int, default=1, help="1-based member number")
    args = ap.parse_args()
    ck = load_checkpoint(args.ensemble)
    k = args.member - 1
    if ck.config.ensemble < 2 or not 0 <= k < ck.config.ensemble:
        raise SystemExit(
            f"{args.ensemble} has {ck.config.ensemble} member(s); no member {args.member}"
        )
    prefix = f"members.{k}."
    state = {n: v for n, v in ck.state_dict.items() if n.startswith("image.")}
    state.update({n[len(prefix) :]: v for n, v in ck.state_dict.items() if n.startswith(prefix)})
    single = dataclasses.replace(
        ck,
        config=dataclasses.replace(ck.config, ensemble=1),
        state_dict=state,
        card_markdown="",
        metrics={"note": f"member {args.member} of {args.ensemble.name}", **ck.metrics},
    )
    print(f"wrote {save_checkpoint(single, args.out)}")


if __name__ == "__main__":
    main()
